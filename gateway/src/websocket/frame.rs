//! WebSocket frames (RFC 6455 §5), as a server reads and writes them: the client's frames read
//! out of the connection's read buffer (the payload of a binary frame is a slice of it, no copy),
//! the server's written unmasked into its write buffer.
//!
//! Strict where a client could make the server hold or echo more than it should: a frame's
//! length is checked against the limit before its payload is buffered, fragments are joined up
//! to the same limit, control frames are whole and at most 125 bytes, client frames are masked,
//! reserved bits and opcodes are refused. A violation names the close code and reason.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// Continues a fragmented message.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
/// The opcode of a binary frame.
pub(crate) const BINARY: u8 = 0x2;
/// The opcode of a close frame.
pub(crate) const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
/// The opcode of a pong frame.
pub(crate) const PONG: u8 = 0xA;

/// The close codes the gateway sends (RFC 6455 §7.4.1).
pub(crate) mod close_code {
    /// Normal closure (the idle timeout; the answer to a close frame without a code).
    pub(crate) const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub(crate) const AWAY: u16 = 1001;
    /// A frame no client may send.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// A kind of data the gateway does not take (text frames).
    pub(crate) const UNSUPPORTED: u16 = 1003;
    /// Data that is not what it should be (not a `UserMessage`, a close reason not UTF-8).
    pub(crate) const INVALID: u16 = 1007;
    /// The session broke a policy (it was kicked).
    pub(crate) const POLICY: u16 = 1008;
    /// A frame or message over the limit.
    pub(crate) const TOO_LARGE: u16 = 1009;
}

/// The most a control frame's payload may hold.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// What a client sent: a whole message (fragments joined) or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A binary message.
    Binary(Bytes),
    /// The first frame of a text message, reported as soon as its header has come and left in the
    /// buffer: the gateway takes binary frames only, and reads nothing more after a text frame.
    Text,
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (ignored).
    Pong,
    /// A close frame with its status code, if it had one.
    Close(Option<u16>),
}

/// Why a client's frames cannot be read: the connection is closed with this code and reason.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A frame, or a message of fragments (`fragments`: its size so far, this fragment
    /// included), over the limit (1009).
    TooLarge { size: u64, max: usize, fragments: bool },
    /// Not a frame a client may send (1002).
    Protocol(&'static str),
    /// A close frame whose reason is not UTF-8 (1007).
    NotUtf8,
}

impl Violation {
    /// The close code this violation ends the connection with.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            Violation::TooLarge { .. } => close_code::TOO_LARGE,
            Violation::Protocol(_) => close_code::PROTOCOL,
            Violation::NotUtf8 => close_code::INVALID,
        }
    }

    /// The close reason the client reads.
    pub(crate) fn reason(&self) -> String {
        match self {
            Violation::TooLarge { size, max, fragments: false } => {
                format!("frame of {size} bytes exceeds the limit of {max}")
            }
            Violation::TooLarge { size, max, fragments: true } => {
                format!("fragmented message of {size} bytes so far exceeds the limit of {max}")
            }
            Violation::Protocol(reason) => (*reason).to_owned(),
            Violation::NotUtf8 => "close reason is not UTF-8".to_owned(),
        }
    }
}

/// Reads a client's frames, joining fragmented messages.
#[derive(Debug)]
pub(crate) struct Reader {
    /// The most bytes a message may carry (one frame, or its fragments together).
    max: usize,
    /// A binary message whose first fragments have come, waiting for its last.
    partial: Option<BytesMut>,
}

impl Reader {
    /// A reader of messages up to `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self { max, partial: None }
    }

    /// Takes the next whole frame out of `buf`; `None` while `buf` holds only part of one (it then
    /// has the capacity for the rest of the frame). Control frames may come between the
    /// fragments of a message; a message's fragments are returned joined, as one binary frame.
    ///
    /// # Errors
    /// A frame a client may not send, or over the limit: see [`Violation`]. Nothing more should
    /// be read from the connection after one.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Violation> {
        loop {
            let Some(header) = Header::parse(buf)? else { return Ok(None) };
            let control = header.opcode & 0x8 != 0;
            if control {
                if !header.fin || header.len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Violation::Protocol("control frames must be whole and at most 125 bytes"));
                }
            } else {
                let (before, fragments) = match &self.partial {
                    Some(partial) => (partial.len() as u64, true),
                    None => (0, !header.fin),
                };
                if before + header.len > self.max as u64 {
                    return Err(Violation::TooLarge { size: before + header.len, max: self.max, fragments });
                }
            }
            match (header.opcode, &self.partial) {
                (CONTINUATION, None) => {
                    return Err(Violation::Protocol("continuation frame without a message to continue"));
                }
                (TEXT | BINARY, Some(_)) => {
                    return Err(Violation::Protocol("new message before the fragmented one ended"));
                }
                // A text message is refused as it starts: its payload need not be read.
                (TEXT, None) => return Ok(Some(Frame::Text)),
                _ => {}
            }
            // Within the limit (checked above), so it fits in memory.
            let len = header.len as usize;
            let whole = header.size + len;
            if buf.len() < whole {
                buf.reserve(whole - buf.len());
                return Ok(None);
            }
            buf.advance(header.size);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, header.mask);
            match header.opcode {
                BINARY if header.fin => return Ok(Some(Frame::Binary(payload.freeze()))),
                BINARY => self.partial = Some(payload),
                CONTINUATION => {
                    let message = self.partial.as_mut().expect("checked above: a message is partial");
                    message.extend_from_slice(&payload);
                    if header.fin {
                        let message = self.partial.take().expect("checked above: a message is partial");
                        return Ok(Some(Frame::Binary(message.freeze())));
                    }
                }
                CLOSE => return close_status(&payload).map(|code| Some(Frame::Close(code))),
                PING => return Ok(Some(Frame::Ping(payload.freeze()))),
                PONG => return Ok(Some(Frame::Pong)),
                _ => unreachable!("the header refused other opcodes"),
            }
        }
    }
}

/// A frame's header, parsed.
#[derive(Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    /// The payload's length.
    len: u64,
    /// The client's masking key.
    mask: [u8; 4],
    /// The header's own length.
    size: usize,
}

impl Header {
    /// The header at the start of `buf`, which it leaves as it is; `None` while incomplete.
    fn parse(buf: &[u8]) -> Result<Option<Self>, Violation> {
        let [first, second, ..] = *buf else { return Ok(None) };
        if first & 0x70 != 0 {
            return Err(Violation::Protocol("reserved bits set: no extension was agreed"));
        }
        let opcode = first & 0x0F;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(Violation::Protocol("unknown opcode"));
        }
        if second & 0x80 == 0 {
            return Err(Violation::Protocol("client frames must be masked"));
        }
        let (len_size, short) = match second & 0x7F {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(u64::from(len))),
        };
        let size = 2 + len_size + 4;
        let Some(header) = buf.get(..size) else { return Ok(None) };
        let len = match short {
            Some(len) => len,
            None if len_size == 2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            None => {
                let len = u64::from_be_bytes(header[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("payload length with its top bit set"));
                }
                len
            }
        };
        let mask = header[size - 4..].try_into().expect("4 bytes");
        Ok(Some(Self { fin: first & 0x80 != 0, opcode, len, mask, size }))
    }
}

/// XORs `payload` with the client's masking key (RFC 6455 §5.3), eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (chunks, rest) = payload.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    // The rest starts at a multiple of 8, so at the key's first byte.
    for (byte, key) in rest.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// The status code of a close frame's payload (none when empty).
fn close_status(payload: &[u8]) -> Result<Option<u16>, Violation> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(Violation::Protocol("close frame of one byte")),
        };
    };
    let code = u16::from_be_bytes(*code);
    // §7.4: the codes an endpoint may send (1005, 1006 and 1015 are never on the wire).
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(Violation::Protocol("close code not allowed on the wire"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(Violation::NotUtf8);
    }
    Ok(Some(code))
}

/// Writes a server frame (final, unmasked) with `opcode` and `payload` at the end of `buf`.
pub(crate) fn put(buf: &mut BytesMut, opcode: u8, payload: &[u8]) {
    put_header(buf, opcode, payload.len());
    buf.put_slice(payload);
}

/// Writes the header of a server frame (final, unmasked) with `opcode` and a payload of `len`
/// bytes at the end of `buf`, and reserves room for the payload, which the caller writes next.
pub(crate) fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.reserve(10 + len);
    buf.put_u8(0x80 | opcode);
    match len {
        len @ 0..=125 => buf.put_u8(len as u8),
        len @ 126..=0xFFFF => {
            buf.put_u8(126);
            buf.put_u16(len as u16);
        }
        len => {
            buf.put_u8(127);
            buf.put_u64(len as u64);
        }
    }
}

/// Writes a close frame with `code` and `reason` (cut to the 123 bytes a close frame has room
/// for, at a character boundary) at the end of `buf`.
pub(crate) fn put_close(buf: &mut BytesMut, code: u16, reason: &str) {
    let end = reason.floor_char_boundary(MAX_CONTROL_PAYLOAD - 2);
    let mut payload = [0; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    put(buf, CLOSE, &payload[..2 + end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: `first` byte (FIN, opcode), masked `payload`.
    fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        frame
    }

    fn read_all(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<Frame>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = reader.read(&mut buf)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left unread", buf.len());
        Ok(frames)
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn binary_frames_of_every_length_form_are_unmasked() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 0xFFFF, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut reader = Reader::new(1 << 20);
            let frames = read_all(&mut reader, &client_frame(0x82, &payload, MASK)).unwrap();
            assert_eq!(frames, [Frame::Binary(payload.into())], "length {len}");
        }
    }

    #[test]
    fn a_frame_cut_anywhere_waits_for_the_rest() {
        let frame = client_frame(0x82, b"hello, mortar", MASK);
        for cut in 0..frame.len() {
            let mut reader = Reader::new(1024);
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(reader.read(&mut buf), Ok(None), "cut at {cut}");
            // Once the header has come, the buffer has room for the whole frame.
            assert!(cut < 6 || buf.capacity() >= frame.len(), "room for the rest after {cut}");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(reader.read(&mut buf), Ok(Some(Frame::Binary(Bytes::from_static(b"hello, mortar")))));
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut bytes = client_frame(0x02, b"one ", MASK);
        bytes.extend(client_frame(0x89, b"ping", MASK));
        bytes.extend(client_frame(0x00, b"two ", MASK));
        bytes.extend(client_frame(0x80, b"three", MASK));
        bytes.extend(client_frame(0x8A, b"", MASK));
        let frames = read_all(&mut Reader::new(1024), &bytes).unwrap();
        assert_eq!(
            frames,
            [
                Frame::Ping(Bytes::from_static(b"ping")),
                Frame::Binary(Bytes::from_static(b"one two three")),
                Frame::Pong
            ]
        );
    }

    #[test]
    fn messages_over_the_limit_are_refused_before_their_payload_comes() {
        let mut reader = Reader::new(100);
        // Only the header of a frame of 101 bytes.
        let header = &client_frame(0x82, &[0; 101], MASK)[..8];
        let mut buf = BytesMut::from(header);
        assert_eq!(reader.read(&mut buf), Err(Violation::TooLarge { size: 101, max: 100, fragments: false }));
        // A length of 2^62 is refused the same way, and a length with its top bit set at all.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert_eq!(
            Reader::new(100).read(&mut BytesMut::from(&huge[..])),
            Err(Violation::TooLarge { size: 1 << 62, max: 100, fragments: false })
        );
        huge[2] = 0x80;
        assert!(matches!(Reader::new(100).read(&mut BytesMut::from(&huge[..])), Err(Violation::Protocol(_))));
        // Fragments count together.
        let mut bytes = client_frame(0x02, &[1; 60], MASK);
        bytes.extend(client_frame(0x80, &[2; 41], MASK));
        let over = read_all(&mut Reader::new(100), &bytes).unwrap_err();
        assert_eq!(over, Violation::TooLarge { size: 101, max: 100, fragments: true });
        assert_eq!(over.reason(), "fragmented message of 101 bytes so far exceeds the limit of 100");
        let message = read_all(&mut Reader::new(101), &bytes).unwrap();
        assert_eq!(message.len(), 1);
    }

    #[test]
    fn frames_a_client_may_not_send_are_protocol_violations() {
        let unmasked = [0x82, 0x01, 0xFF];
        let reserved = client_frame(0xC2, b"x", MASK);
        let opcode = client_frame(0x83, b"x", MASK);
        let long_ping = client_frame(0x89, &[0; 126], MASK);
        let fragmented_ping = client_frame(0x09, b"x", MASK);
        let lone_continuation = client_frame(0x80, b"x", MASK);
        let mut interleaved = client_frame(0x02, b"x", MASK);
        interleaved.extend(client_frame(0x82, b"y", MASK));
        let one_byte_close = client_frame(0x88, &[3], MASK);
        let reserved_code = client_frame(0x88, &1005u16.to_be_bytes(), MASK);
        for (what, bytes) in [
            ("unmasked", &unmasked[..]),
            ("reserved bits", &reserved),
            ("unknown opcode", &opcode),
            ("long ping", &long_ping),
            ("fragmented ping", &fragmented_ping),
            ("lone continuation", &lone_continuation),
            ("interleaved messages", &interleaved),
            ("one-byte close", &one_byte_close),
            ("reserved close code", &reserved_code),
        ] {
            let read = read_all(&mut Reader::new(1024), bytes);
            assert!(matches!(read, Err(Violation::Protocol(_))), "{what}: {read:?}");
            assert_eq!(read.unwrap_err().close_code(), 1002);
        }
    }

    #[test]
    fn close_frames_carry_their_code_and_a_utf8_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice("au revoir, élan".as_bytes());
        let frames = read_all(&mut Reader::new(1024), &client_frame(0x88, &payload, MASK)).unwrap();
        assert_eq!(frames, [Frame::Close(Some(1000))]);
        assert_eq!(
            read_all(&mut Reader::new(1024), &client_frame(0x88, b"", MASK)).unwrap(),
            [Frame::Close(None)]
        );
        payload.truncate(2);
        payload.extend_from_slice(&[0xC3, 0x28]);
        let read = read_all(&mut Reader::new(1024), &client_frame(0x88, &payload, MASK));
        assert_eq!(read, Err(Violation::NotUtf8));
    }

    #[test]
    fn a_text_message_is_reported_as_it_starts() {
        // Its header alone: the payload is never waited for.
        let header = &client_frame(0x01, b"hi", MASK)[..6];
        assert_eq!(Reader::new(1024).read(&mut BytesMut::from(header)), Ok(Some(Frame::Text)));
    }

    /// Streams of frames, half of them with bits flipped, read whole and cut into reads of random
    /// sizes: the reader never panics, and reads the same frames (and the same first violation)
    /// however the stream is cut.
    #[test]
    fn mutated_streams_read_the_same_however_they_are_cut() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut stream = Vec::new();
            for _ in 0..next() % 4 + 1 {
                let first = [0x82, 0x02, 0x80, 0x00, 0x89, 0x8A, 0x88][(next() % 7) as usize];
                let len = if first & 0x8 != 0 { next() % 126 } else { next() % 400 } as usize;
                let payload: Vec<u8> = match first {
                    0x88 => [&1000u16.to_be_bytes()[..], b"bye"].concat(),
                    _ => (0..len).map(|_| next() as u8).collect(),
                };
                stream.extend(client_frame(first, &payload, (next() as u32).to_ne_bytes()));
            }
            if round % 2 == 1 {
                for _ in 0..next() % 3 + 1 {
                    let at = (next() % stream.len() as u64) as usize;
                    stream[at] ^= 1 << (next() % 8);
                }
            }
            let mut whole = Vec::new();
            let (mut reader, mut buf) = (Reader::new(300), BytesMut::from(&stream[..]));
            // A text frame ends the reading as a violation does: the gateway closes on it.
            loop {
                match reader.read(&mut buf) {
                    Ok(Some(Frame::Text)) => {
                        whole.push(Ok(Frame::Text));
                        break;
                    }
                    Ok(Some(frame)) => whole.push(Ok(frame)),
                    Ok(None) => break,
                    Err(violation) => {
                        whole.push(Err(violation));
                        break;
                    }
                }
            }
            let mut cut = Vec::new();
            let (mut reader, mut buf, mut fed) = (Reader::new(300), BytesMut::new(), 0);
            'feed: while fed < stream.len() {
                let chunk = ((next() % 64) as usize + 1).min(stream.len() - fed);
                buf.extend_from_slice(&stream[fed..fed + chunk]);
                fed += chunk;
                loop {
                    match reader.read(&mut buf) {
                        Ok(Some(Frame::Text)) => {
                            cut.push(Ok(Frame::Text));
                            break 'feed;
                        }
                        Ok(Some(frame)) => cut.push(Ok(frame)),
                        Ok(None) => break,
                        Err(violation) => {
                            cut.push(Err(violation));
                            break 'feed;
                        }
                    }
                }
            }
            assert_eq!(whole, cut, "round {round}");
        }
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        for (len, header) in [(0, vec![0x82, 0]), (125, vec![0x82, 125]), (126, vec![0x82, 126, 0, 126])] {
            let mut buf = BytesMut::new();
            put(&mut buf, BINARY, &vec![9; len]);
            assert_eq!(&buf[..header.len()], &header[..]);
            assert_eq!(buf.len(), header.len() + len);
        }
        let mut buf = BytesMut::new();
        put(&mut buf, BINARY, &vec![1; 0x10000]);
        assert_eq!(&buf[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut buf = BytesMut::new();
        put_close(&mut buf, 1009, &"é".repeat(100));
        assert_eq!(&buf[..4], &[0x88, 124, 0x03, 0xF1]);
        assert!(std::str::from_utf8(&buf[4..]).is_ok());
    }
}
