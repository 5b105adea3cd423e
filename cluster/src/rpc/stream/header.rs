//! The headers of the relay stream's `REQUEST`, `DRAINING` and `REPLY` frames, in a fixed layout
//! (little-endian integers, strings after a `u16` or `u32` length). postcard wrote them as varints
//! through serde: a relayed request's header cost the gateway about 730 instructions to write and
//! the worker about 1,200 to read (a random 128-bit trace id alone is a 19-byte varint), where
//! these take a few dozen. The body follows the header as is.
//!
//! A request header: id `u64`, time left in µs `u64`, seq `u32`, session `u64`, user (`u8` 0 or 1,
//! then `u64`), trace id `u128`, client IP (`u8` 4 or 6, then 4 or 16 bytes), then the route's
//! main and sub and the gateway id, each a `u16` length and UTF-8. A reply header: id `u64`, code
//! `i32`, reason (a `u32` length and UTF-8).

use super::super::{AgentMessage, Reply};
use bytes::{BufMut as _, Bytes, BytesMut};
use bytestring::ByteString;
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

/// A request header's bytes besides its strings, at most: id, time left, seq, session, user
/// (flag and id), trace id, an IPv6 address (family and octets), three string lengths.
const REQUEST_FIXED: usize = 8 + 8 + 4 + 8 + (1 + 8) + 16 + (1 + 16) + 3 * 2;

/// Appends the header of request `id` with `budget` left, and `msg`'s body after it.
pub(super) fn put_request(
    buf: &mut BytesMut,
    id: u64,
    budget: Duration,
    msg: &AgentMessage,
) -> io::Result<()> {
    let short = |text: &str| {
        u16::try_from(text.len())
            .map_err(|_| invalid(format!("a string of {} bytes in a request header", text.len())))
    };
    let (main_len, sub_len, gateway_len) = (short(&msg.main)?, short(&msg.sub)?, short(&msg.gateway)?);
    buf.reserve(REQUEST_FIXED + msg.main.len() + msg.sub.len() + msg.gateway.len() + msg.data.len());
    buf.put_u64_le(id);
    buf.put_u64_le(u64::try_from(budget.as_micros()).unwrap_or(u64::MAX));
    buf.put_u32_le(msg.seq);
    buf.put_u64_le(msg.session);
    buf.put_u8(u8::from(msg.user.is_some()));
    buf.put_u64_le(msg.user.unwrap_or(0));
    buf.put_u128_le(msg.trace_id);
    match msg.client_ip {
        IpAddr::V4(ip) => {
            buf.put_u8(4);
            buf.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf.put_u8(6);
            buf.put_slice(&ip.octets());
        }
    }
    for (len, text) in [(main_len, &msg.main), (sub_len, &msg.sub), (gateway_len, &msg.gateway)] {
        buf.put_u16_le(len);
        buf.put_slice(text.as_bytes());
    }
    buf.put_slice(&msg.data);
    Ok(())
}

/// Reads a request's id, time left and message from `frame` (its kind byte first); the route
/// and body are slices of `frame`.
pub(super) fn request(frame: &Bytes) -> io::Result<(u64, Duration, AgentMessage)> {
    let mut read = Read { frame, at: 1 };
    let id = read.u64()?;
    let budget = Duration::from_micros(read.u64()?);
    let seq = u32::from_le_bytes(read.array()?);
    let session = read.u64()?;
    let has_user = read.u8()?;
    let user = read.u64()?;
    let user = match has_user {
        0 => None,
        1 => Some(user),
        other => return Err(invalid(format!("user flag {other} in a request header"))),
    };
    let trace_id = u128::from_le_bytes(read.array()?);
    let client_ip = match read.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(read.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(read.array::<16>()?)),
        other => return Err(invalid(format!("address family {other} in a request header"))),
    };
    let main = read.text_u16()?;
    let sub = read.text_u16()?;
    // The session's gateway id is a `String` in the runtime: read as one, no copy later.
    let gateway = String::from(read.text_u16()?).into();
    let data = frame.slice(read.at..);
    Ok((id, budget, AgentMessage { main, sub, seq, data, session, user, client_ip, gateway, trace_id }))
}

/// Appends the header of reply `id`, and the reply's body after it.
pub(super) fn put_reply(buf: &mut BytesMut, id: u64, reply: &Reply) -> io::Result<()> {
    let reason_len = u32::try_from(reply.reason.len()).map_err(|_| invalid("a reason over 4 GiB".into()))?;
    buf.reserve(16 + reply.reason.len() + reply.data.len());
    buf.put_u64_le(id);
    buf.put_i32_le(reply.code);
    buf.put_u32_le(reason_len);
    buf.put_slice(reply.reason.as_bytes());
    buf.put_slice(&reply.data);
    Ok(())
}

/// Reads a reply's id and reply from `frame` (its kind byte first); the body is a slice of it.
pub(super) fn reply(frame: &Bytes) -> io::Result<(u64, Reply)> {
    let mut read = Read { frame, at: 1 };
    let id = read.u64()?;
    let code = i32::from_le_bytes(read.array()?);
    let len = u32::from_le_bytes(read.array()?) as usize;
    let reason = String::from(read.text(len)?);
    Ok((id, Reply { code, data: frame.slice(read.at..), reason }))
}

/// A cursor over a frame whose reads fail, never panic, past its end.
struct Read<'f> {
    frame: &'f Bytes,
    at: usize,
}

impl Read<'_> {
    fn take(&mut self, len: usize) -> io::Result<std::ops::Range<usize>> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.frame.len());
        let end = end.ok_or_else(|| invalid(format!("a header cut short at byte {}", self.frame.len())))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let range = self.take(N)?;
        let mut array = [0; N];
        array.copy_from_slice(&self.frame[range]);
        Ok(array)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// `len` bytes of UTF-8, as a slice of the frame.
    fn text(&mut self, len: usize) -> io::Result<ByteString> {
        let range = self.take(len)?;
        ByteString::try_from(self.frame.slice(range))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn text_u16(&mut self) -> io::Result<ByteString> {
        let len = u16::from_le_bytes(self.array()?);
        self.text(usize::from(len))
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user: Option<u64>, client_ip: IpAddr, main: &str, data: &'static [u8]) -> AgentMessage {
        AgentMessage {
            main: main.into(),
            sub: "say".into(),
            seq: u32::MAX,
            data: Bytes::from_static(data),
            session: 1 << 40,
            user,
            client_ip,
            gateway: "gateway-1".into(),
            trace_id: u128::MAX - 7,
        }
    }

    fn framed(kind: u8, put: impl FnOnce(&mut BytesMut) -> io::Result<()>) -> Bytes {
        let mut buf = BytesMut::from(&[kind][..]);
        put(&mut buf).unwrap();
        buf.freeze()
    }

    #[test]
    fn requests_read_back_as_written() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for msg in [
            sample(Some(0), [127, 0, 0, 1].into(), "echo", b"hello"),
            sample(None, v6, "", b""),
            sample(Some(u64::MAX), [10, 1, 2, 3].into(), "ünïcödé", &[0; 300]),
        ] {
            let frame = framed(1, |buf| put_request(buf, 42, Duration::from_micros(2_500_000), &msg));
            let (id, budget, read) = request(&frame).unwrap();
            assert_eq!((id, budget), (42, Duration::from_micros(2_500_000)));
            assert_eq!(
                (&read.main, &read.sub, read.seq, &read.data, read.session, read.user, read.client_ip),
                (&msg.main, &msg.sub, msg.seq, &msg.data, msg.session, msg.user, msg.client_ip)
            );
            assert_eq!((&read.gateway, read.trace_id), (&msg.gateway, msg.trace_id));
        }
    }

    #[test]
    fn replies_read_back_as_written() {
        for reply in
            [Reply::ok(Bytes::from_static(b"body")), Reply::because(mortar_abi::Code::TIMEOUT, "late ✓")]
        {
            let frame = framed(2, |buf| put_reply(buf, u64::MAX, &reply));
            assert_eq!(super::reply(&frame).unwrap(), (u64::MAX, reply));
        }
    }

    /// A frame cut anywhere inside its header, or with a bad flag, family or string, is an
    /// error, never a panic.
    #[test]
    fn a_header_cut_short_or_bent_is_refused() {
        let msg = sample(Some(3), "::1".parse().unwrap(), "echo", b"");
        let whole = framed(1, |buf| put_request(buf, 1, Duration::ZERO, &msg));
        for len in 1..whole.len() {
            assert!(request(&whole.slice(..len)).is_err(), "cut at {len}");
        }
        let reply = framed(2, |buf| put_reply(buf, 1, &Reply::because(mortar_abi::Code::INTERNAL, "why")));
        for len in 1..reply.len() {
            assert!(super::reply(&reply.slice(..len)).is_err(), "cut at {len}");
        }
        let bent = |at: usize, byte: u8| {
            let mut frame = BytesMut::from(&whole[..]);
            frame[at] = byte;
            request(&frame.freeze())
        };
        let user_flag = 1 + 8 + 8 + 4 + 8;
        let family = user_flag + 1 + 8 + 16;
        let main_text = family + 1 + 16 + 2;
        assert!(bent(user_flag, 2).unwrap_err().to_string().contains("user flag 2"));
        assert!(bent(family, 5).unwrap_err().to_string().contains("address family 5"));
        assert!(bent(main_text, 0xff).is_err(), "a route that is not UTF-8");
        let long = sample(None, [127, 0, 0, 1].into(), &"m".repeat(70_000), b"");
        assert!(put_request(&mut BytesMut::new(), 1, Duration::ZERO, &long).is_err());
    }
}
