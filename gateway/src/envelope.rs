//! The gateway's first look at a client frame: decode the `UserMessage` and check what a client
//! controls before anything else touches it; and the replies the gateway builds, with their
//! reasons kept short. Pure functions, fuzzed by `fuzz/`.

use bytes::Bytes;
use mortar_abi::Code;
use mortar_cluster::rpc::Reply;
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

/// The most bytes of a reply's `reason` a client gets: longer reasons are cut, at a character
/// boundary.
pub const MAX_REASON_BYTES: usize = 200;

/// Decodes one binary frame and checks its route length against `max_route_bytes`.
///
/// A request whose route is too long is refused with `BAD_REQUEST`, a reason that says so, and an
/// empty route (the route is not echoed back, so a client cannot make the gateway repeat large
/// strings).
pub fn inspect(frame: Bytes, max_route_bytes: usize) -> Inbound {
    let msg = match UserMessage::decode(frame) {
        Ok(msg) => msg,
        Err(error) => return Inbound::Malformed(format!("bad envelope: {error}")),
    };
    if msg.main_type.len() + msg.sub_type.len() > max_route_bytes {
        let reason = format!("route longer than {max_route_bytes} bytes");
        return Inbound::Refuse(reply_because(
            String::new(),
            String::new(),
            msg.seq,
            Code::BAD_REQUEST,
            reason,
        ));
    }
    Inbound::Request(msg)
}

/// A reply carrying only a code.
pub fn reply_code(main_type: String, sub_type: String, seq: u32, code: Code) -> UserMessage {
    UserMessage { main_type, sub_type, seq, code: code.get(), data: Bytes::new(), reason: String::new() }
}

/// A reply carrying a code and the reason the client reads, cut to [`MAX_REASON_BYTES`]; an OK
/// reply never carries one.
pub fn reply_because(
    main_type: String,
    sub_type: String,
    seq: u32,
    code: Code,
    reason: String,
) -> UserMessage {
    let reason = if code.is_ok() { String::new() } else { cap_reason(reason) };
    UserMessage { main_type, sub_type, seq, code: code.get(), data: Bytes::new(), reason }
}

/// The client's reply to its request `main_type.sub_type` (`seq`) from a worker's `reply`: the
/// body, the code and, when the code is not OK, the reason cut to [`MAX_REASON_BYTES`].
pub fn relayed(main_type: String, sub_type: String, seq: u32, reply: Reply) -> UserMessage {
    let Reply { code, data, reason } = reply;
    let reason = if code == Code::OK.get() { String::new() } else { cap_reason(reason) };
    UserMessage { main_type, sub_type, seq, code, data, reason }
}

/// `reason`, cut to at most [`MAX_REASON_BYTES`] at a character boundary.
pub fn cap_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
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
        assert_eq!(reply.reason, "route longer than 62 bytes");
    }

    #[test]
    fn reasons_are_cut_at_a_char_boundary_and_never_sent_with_ok() {
        assert_eq!(cap_reason("log in first".into()), "log in first");
        let exact = "a".repeat(MAX_REASON_BYTES);
        assert_eq!(cap_reason(exact.clone()), exact);
        // 'é' is two bytes: 201 bytes cut to 200 would split the last one, so 199 remain.
        let long = format!("a{}", "é".repeat(100));
        let cut = cap_reason(long);
        assert_eq!(cut.len(), MAX_REASON_BYTES - 1);
        assert!(cut.ends_with('é'));
        let reply = relayed("echo".into(), "say".into(), 3, Reply::because(Code::NOT_FOUND, "x".repeat(500)));
        assert_eq!((reply.code, reply.reason.len(), reply.seq), (Code::NOT_FOUND.get(), MAX_REASON_BYTES, 3));
        let ok = Reply { reason: "ignored".into(), ..Reply::ok(Bytes::from_static(b"body")) };
        let reply = relayed("echo".into(), "say".into(), 4, ok);
        assert_eq!((reply.code, reply.reason.as_str(), &reply.data[..]), (0, "", &b"body"[..]));
        assert!(reply_because(String::new(), String::new(), 5, Code::OK, "no".into()).reason.is_empty());
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
