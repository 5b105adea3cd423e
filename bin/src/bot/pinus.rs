//! The Pomelo/Pinus packet protocol, client side, as much as the bot needs: packages (1 type byte,
//! 3 length bytes, body), the handshake, heartbeats, and request/response messages with JSON
//! bodies and uncompressed routes.

/// Package types.
pub const HANDSHAKE: u8 = 1;
/// The client's acknowledgement of the server's handshake.
pub const HANDSHAKE_ACK: u8 = 2;
/// Heartbeat, both directions.
pub const HEARTBEAT: u8 = 3;
/// A message (request, response, push).
pub const DATA: u8 = 4;
/// The server kicks the client.
pub const KICK: u8 = 5;

const MESSAGE_REQUEST: u8 = 0;
const MESSAGE_RESPONSE: u8 = 2;

/// One package: `[type][length: 3 bytes big-endian][body]`.
pub fn package(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&[kind, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(body);
    out
}

/// The client's handshake package.
pub fn handshake() -> Vec<u8> {
    package(HANDSHAKE, br#"{"sys":{"type":"mortar-bot","version":"0.1.0","rsa":{}},"user":{}}"#)
}

/// A request package: message flag (request, route not compressed), id (base-128, low group
/// first), route (1 length byte + bytes), JSON body.
pub fn request(id: u32, route: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(8 + route.len() + body.len());
    message.push(MESSAGE_REQUEST << 1);
    let mut rest = id;
    loop {
        let group = (rest % 128) as u8;
        rest /= 128;
        message.push(if rest == 0 { group } else { group | 0x80 });
        if rest == 0 {
            break;
        }
    }
    message.push(route.len().min(255) as u8);
    message.extend_from_slice(&route.as_bytes()[..route.len().min(255)]);
    message.extend_from_slice(body);
    package(DATA, &message)
}

/// Splits a WebSocket message into its packages `(type, body)`; None if it is malformed.
pub fn packages(frame: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = frame;
    while !rest.is_empty() {
        let [kind, a, b, c, tail @ ..] = rest else { return None };
        let len = (usize::from(*a) << 16) | (usize::from(*b) << 8) | usize::from(*c);
        if tail.len() < len {
            return None;
        }
        out.push((*kind, &tail[..len]));
        rest = &tail[len..];
    }
    Some(out)
}

/// The id and JSON body of a response message; None for other messages.
pub fn response(message: &[u8]) -> Option<(u32, &[u8])> {
    let (flag, mut rest) = message.split_first()?;
    if (flag >> 1) & 0x7 != MESSAGE_RESPONSE {
        return None;
    }
    let mut id = 0u32;
    for shift in (0..35).step_by(7) {
        let (byte, tail) = rest.split_first()?;
        rest = tail;
        id |= u32::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((id, rest));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_pinus_protocol() {
        // id 300 = 0b10_0101100: low group 0x2c with the continue bit, then 0x02.
        let pkg = request(300, "a.b.c", b"{}");
        assert_eq!(&pkg[..4], &[DATA, 0, 0, 11]);
        assert_eq!(&pkg[4..], &[0x00, 0xac, 0x02, 5, b'a', b'.', b'b', b'.', b'c', b'{', b'}']);
    }

    #[test]
    fn responses_and_packages_parse() {
        let message = [MESSAGE_RESPONSE << 1, 0xac, 0x02, b'{', b'}'];
        let frame = [package(HEARTBEAT, &[]), package(DATA, &message)].concat();
        let parsed = packages(&frame).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (HEARTBEAT, &[][..]));
        assert_eq!(response(parsed[1].1), Some((300, &b"{}"[..])));
        assert!(packages(&[DATA, 0, 0, 9, 1]).is_none());
        assert!(response(&[MESSAGE_REQUEST << 1, 1]).is_none());
    }
}
