//! The gateway's first look at a client frame: decode the `UserMessage` and check what a client
//! controls before anything else touches it; and the replies the gateway builds, with their
//! reasons kept short. Pure functions, fuzzed by `fuzz/`.
//!
//! The gateway reads and writes `UserMessage`s as [`Envelope`]s, whose route is a view of the
//! client's frame, like its body: a request's route is neither copied nor allocated on its way to
//! the worker and back into the reply.

use bytes::{BufMut, Bytes};
use bytestring::ByteString;
use mortar_abi::Code;
use mortar_cluster::rpc::Reply;
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

/// A `UserMessage` (`pb/proto/mortar.proto`) as the gateway holds it: the same fields, the
/// strings kept in [`Bytes`] (a decoded one is a slice of its frame).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Module part of the route.
    pub main_type: ByteString,
    /// Handler part of the route.
    pub sub_type: ByteString,
    /// The reply's code (`ErrorCode`); 0 on requests and pushes.
    pub code: i32,
    /// The route's message, protobuf-encoded.
    pub data: Bytes,
    /// The client's request id; 0 on pushes.
    pub seq: u32,
    /// Why a request failed; empty unless `code` is not OK.
    pub reason: String,
}

/// `UserMessage` with its strings as `bytes` fields (the same wire format): prost decodes them
/// as slices of the frame, where `string` fields would each be copied into a `String`.
#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(bytes = "bytes", tag = "1")]
    main_type: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    sub_type: Bytes,
    #[prost(int32, tag = "3")]
    code: i32,
    #[prost(bytes = "bytes", tag = "4")]
    data: Bytes,
    #[prost(uint32, tag = "5")]
    seq: u32,
    #[prost(bytes = "bytes", tag = "6")]
    reason: Bytes,
}

impl Envelope {
    /// Decodes a `UserMessage` from `frame`; its strings and body are slices of `frame`.
    ///
    /// # Errors
    /// What is wrong with the frame: not a `UserMessage`, or a string that is not UTF-8.
    pub fn decode(frame: Bytes) -> Result<Self, String> {
        let wire = Wire::decode(frame).map_err(|error| error.to_string())?;
        let text = |bytes: Bytes| {
            ByteString::try_from(bytes)
                .map_err(|_| "invalid string value: data is not UTF-8 encoded".to_owned())
        };
        Ok(Self {
            main_type: text(wire.main_type)?,
            sub_type: text(wire.sub_type)?,
            code: wire.code,
            data: wire.data,
            seq: wire.seq,
            reason: String::from(text(wire.reason)?),
        })
    }

    /// The encoded `UserMessage`.
    pub fn encode(&self) -> Bytes {
        encode(&self.main_type, &self.sub_type, self.code, &self.data, self.seq, &self.reason)
    }

    /// The length of its encoding.
    pub fn encoded_len(&self) -> usize {
        encoded_len(&self.main_type, &self.sub_type, self.code, &self.data, self.seq, &self.reason)
    }

    /// Writes its encoding at the end of `buf` (as [`Envelope::encode`] encodes it).
    pub fn encode_to(&self, buf: &mut impl BufMut) {
        encode_to(buf, &self.main_type, &self.sub_type, self.code, &self.data, self.seq, &self.reason);
    }
}

/// The `UserMessage` with these fields, encoded as prost encodes it (fields in tag order, those
/// with their default value left out), into one buffer of the exact size.
pub fn encode(main_type: &str, sub_type: &str, code: i32, data: &[u8], seq: u32, reason: &str) -> Bytes {
    let len = encoded_len(main_type, sub_type, code, data, seq, reason);
    let mut buf = Vec::with_capacity(len);
    encode_to(&mut buf, main_type, sub_type, code, data, seq, reason);
    debug_assert_eq!(buf.len(), len);
    Bytes::from(buf)
}

/// The length of [`encode`]'s encoding of these fields.
fn encoded_len(main_type: &str, sub_type: &str, code: i32, data: &[u8], seq: u32, reason: &str) -> usize {
    let text_len = |tag: u32, value: &[u8]| match value.len() {
        0 => 0,
        len => key_len(tag) + encoded_len_varint(len as u64) + len,
    };
    // `int32` is sign-extended to 64 bits on the wire (a negative code takes 10 bytes).
    text_len(1, main_type.as_bytes())
        + text_len(2, sub_type.as_bytes())
        + if code == 0 { 0 } else { key_len(3) + encoded_len_varint(i64::from(code) as u64) }
        + text_len(4, data)
        + if seq == 0 { 0 } else { key_len(5) + encoded_len_varint(u64::from(seq)) }
        + text_len(6, reason.as_bytes())
}

/// Writes [`encode`]'s encoding of these fields at the end of `buf`.
fn encode_to(
    buf: &mut impl BufMut,
    main_type: &str,
    sub_type: &str,
    code: i32,
    data: &[u8],
    seq: u32,
    reason: &str,
) {
    fn text(tag: u32, value: &[u8], buf: &mut impl BufMut) {
        if !value.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(value.len() as u64, buf);
            buf.put_slice(value);
        }
    }
    fn number(tag: u32, value: u64, buf: &mut impl BufMut) {
        if value != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(value, buf);
        }
    }
    text(1, main_type.as_bytes(), buf);
    text(2, sub_type.as_bytes(), buf);
    number(3, i64::from(code) as u64, buf);
    text(4, data, buf);
    number(5, u64::from(seq), buf);
    text(6, reason.as_bytes(), buf);
}

/// A server push `main_type.sub_type` with body `data`, encoded (`seq` 0, no code).
pub fn push(main_type: &str, sub_type: &str, data: &[u8]) -> Bytes {
    encode(main_type, sub_type, 0, data, 0, "")
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Inbound {
    /// A request to handle.
    Request(Envelope),
    /// A request to answer at once with this reply, without handling it.
    Refuse(Envelope),
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
    let msg = match Envelope::decode(frame) {
        Ok(msg) => msg,
        Err(error) => return Inbound::Malformed(format!("bad envelope: {error}")),
    };
    if msg.main_type.len() + msg.sub_type.len() > max_route_bytes {
        let reason = format!("route longer than {max_route_bytes} bytes");
        return Inbound::Refuse(reply_because(
            ByteString::new(),
            ByteString::new(),
            msg.seq,
            Code::BAD_REQUEST,
            reason,
        ));
    }
    Inbound::Request(msg)
}

/// A reply carrying only a code.
pub fn reply_code(main_type: ByteString, sub_type: ByteString, seq: u32, code: Code) -> Envelope {
    Envelope { main_type, sub_type, seq, code: code.get(), data: Bytes::new(), reason: String::new() }
}

/// A reply carrying a code and the reason the client reads, cut to [`MAX_REASON_BYTES`]; an OK
/// reply never carries one.
pub fn reply_because(
    main_type: ByteString,
    sub_type: ByteString,
    seq: u32,
    code: Code,
    reason: String,
) -> Envelope {
    let reason = if code.is_ok() { String::new() } else { cap_reason(reason) };
    Envelope { main_type, sub_type, seq, code: code.get(), data: Bytes::new(), reason }
}

/// The client's reply to its request `main_type.sub_type` (`seq`) from a worker's `reply`: the
/// body, the code and, when the code is not OK, the reason cut to [`MAX_REASON_BYTES`].
pub fn relayed(main_type: ByteString, sub_type: ByteString, seq: u32, reply: Reply) -> Envelope {
    let Reply { code, data, reason } = reply;
    let reason = if code == Code::OK.get() { String::new() } else { cap_reason(reason) };
    Envelope { main_type, sub_type, seq, code, data, reason }
}

/// `reason`, cut to at most [`MAX_REASON_BYTES`] at a character boundary.
pub fn cap_reason(mut reason: String) -> String {
    reason.truncate(reason.floor_char_boundary(MAX_REASON_BYTES));
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_pb::UserMessage;

    fn frame(main: &str, sub: &str) -> Bytes {
        let msg = UserMessage { main_type: main.into(), sub_type: sub.into(), seq: 9, ..Default::default() };
        msg.encode_to_vec().into()
    }

    /// Messages covering each field empty and set, long fields (two-byte lengths), a negative
    /// code and the largest seq.
    fn samples() -> Vec<UserMessage> {
        let message = |main: &str, sub: &str, code: i32, data: &[u8], seq: u32, reason: &str| UserMessage {
            main_type: main.into(),
            sub_type: sub.into(),
            code,
            data: Bytes::copy_from_slice(data),
            seq,
            reason: reason.into(),
        };
        vec![
            UserMessage::default(),
            message("echo", "say", 0, b"\x0a\x02hi", 7, ""),
            message("pack", "query", 1003, b"", 0, "no such item"),
            message("", "", -1, b"", u32::MAX, "é"),
            message(&"m".repeat(200), "s", 4, &[0xff; 300], 128, &"r".repeat(130)),
        ]
    }

    #[test]
    fn envelopes_are_user_messages_on_the_wire() {
        for msg in samples() {
            let prost = msg.encode_to_vec();
            let envelope = Envelope::decode(Bytes::from(prost.clone())).unwrap();
            assert_eq!(
                (&envelope.main_type[..], &envelope.sub_type[..], envelope.code, &envelope.data[..]),
                (msg.main_type.as_str(), msg.sub_type.as_str(), msg.code, &msg.data[..])
            );
            assert_eq!((envelope.seq, envelope.reason.as_str()), (msg.seq, msg.reason.as_str()));
            assert_eq!(&envelope.encode()[..], &prost[..], "{msg:?}");
            assert_eq!(envelope.encoded_len(), prost.len(), "{msg:?}");
            let mut appended = bytes::BytesMut::from(&b"before"[..]);
            envelope.encode_to(&mut appended);
            assert_eq!((&appended[..6], &appended[6..]), (&b"before"[..], &prost[..]), "{msg:?}");
        }
    }

    #[test]
    fn a_decoded_route_is_a_slice_of_its_frame() {
        let frame = frame("echo", "say");
        let envelope = Envelope::decode(frame.clone()).unwrap();
        let within = |text: &[u8]| frame.as_ptr_range().contains(&text.as_ptr());
        assert!(within(envelope.main_type.as_bytes()) && within(envelope.sub_type.as_bytes()));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // Field 7 (varint 1) and field 9 (length-delimited "xy") after a route.
        let mut frame = frame("echo", "say").to_vec();
        frame.extend_from_slice(&[0x38, 0x01, 0x4a, 0x02, b'x', b'y']);
        let envelope = Envelope::decode(Bytes::from(frame)).unwrap();
        assert_eq!((&envelope.main_type[..], envelope.seq), ("echo", 9));
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
        assert!(
            reply_because(ByteString::new(), ByteString::new(), 5, Code::OK, "no".into()).reason.is_empty()
        );
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
