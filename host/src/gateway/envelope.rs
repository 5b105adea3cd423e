//! The gateway's first look at a client frame: decode the `UserMessage` and check what a client
//! controls before anything else touches it. Pure functions, fuzzed by `fuzz/`.

use bytes::Bytes;
use mortar::Code;
use mortar_pb::UserMessage;
use prost::Message as _;

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Inbound {
    /// A request to handle.
    Request(UserMessage),
    /// A request to answer at once with this reply, without handling it.
    Refuse(UserMessage),
    /// Not a `UserMessage`: the connection is closed with this reason.
    Malformed(String),
}

/// Decodes one binary frame and checks its route length against `max_route_bytes`.
///
/// A request whose route is too long is refused with `BAD_REQUEST` and an empty route (the route
/// is not echoed back, so a client cannot make the gateway repeat large strings).
pub fn inspect(frame: Bytes, max_route_bytes: usize) -> Inbound {
    let msg = match UserMessage::decode(frame) {
        Ok(msg) => msg,
        Err(error) => return Inbound::Malformed(format!("bad envelope: {error}")),
    };
    if msg.main_type.len() + msg.sub_type.len() > max_route_bytes {
        return Inbound::Refuse(reply_code(String::new(), String::new(), msg.seq, Code::BAD_REQUEST));
    }
    Inbound::Request(msg)
}

/// A reply carrying only a code.
pub fn reply_code(main_type: String, sub_type: String, seq: u32, code: Code) -> UserMessage {
    UserMessage { main_type, sub_type, seq, code: code.get(), data: Bytes::new(), reason: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(main: &str, sub: &str) -> Bytes {
        let msg = UserMessage { main_type: main.into(), sub_type: sub.into(), seq: 9, ..Default::default() };
        msg.encode_to_vec().into()
    }

    #[test]
    fn accepts_a_request() {
        assert!(matches!(inspect(frame("echo", "say"), 64), Inbound::Request(m) if m.seq == 9));
    }

    #[test]
    fn refuses_a_long_route_without_echoing_it() {
        let Inbound::Refuse(reply) = inspect(frame(&"a".repeat(60), "say"), 62) else { panic!("refused") };
        assert_eq!((reply.code, reply.seq), (Code::BAD_REQUEST.get(), 9));
        assert!(reply.main_type.is_empty() && reply.sub_type.is_empty());
    }

    #[test]
    fn garbage_is_malformed() {
        let Inbound::Malformed(reason) = inspect(Bytes::from_static(&[0xff; 8]), 64) else {
            panic!("malformed")
        };
        assert!(reason.starts_with("bad envelope"), "{reason}");
        // Invalid UTF-8 in a string field.
        let Inbound::Malformed(_) = inspect(Bytes::from_static(&[0x0a, 0x02, 0xc3, 0x28]), 64) else {
            panic!("malformed")
        };
    }
}
