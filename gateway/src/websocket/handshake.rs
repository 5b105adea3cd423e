//! The WebSocket opening handshake (RFC 6455 §4.2), server side: one HTTP/1.1 `GET` upgrade
//! request read and checked, answered `101 Switching Protocols` or refused with a status and a
//! one-line body.

use crate::{WS_PATH, admission::Refusal};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::{Buf as _, BytesMut};
use sha1::{Digest as _, Sha1};
use std::io;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// The most bytes an upgrade request may take (its request line and headers).
pub(crate) const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The most headers an upgrade request may have.
const MAX_HEADERS: usize = 32;

/// Why a connection was not upgraded.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A connection limit: answered 429 or 503.
    Refused(Refusal),
    /// Not an upgrade this server takes: answered with this status and reason.
    Rejected(u16, &'static str),
    /// The client left, or the connection failed, before the upgrade.
    Io(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(refusal) => write!(f, "refused: {}", refusal.as_str()),
            Failure::Rejected(status, reason) => write!(f, "{status}: {reason}"),
            Failure::Io(error) => write!(f, "{error}"),
        }
    }
}

/// Reads the client's upgrade request from `stream` and answers it: `101` when it is a WebSocket
/// upgrade to [`WS_PATH`] and `refusal` is `None`. Returns what the client sent after its request
/// (a client should wait for the answer, but may not), the start of its first frames.
///
/// # Errors
/// See [`Failure`]; the client has had its answer unless the connection failed.
pub(crate) async fn accept(stream: &mut TcpStream, refusal: Option<Refusal>) -> Result<BytesMut, Failure> {
    let mut buf = BytesMut::with_capacity(1024);
    // Parsed once the blank line that ends the headers has come, and searched for only in what
    // came since the last read: a client sending a byte at a time costs a scan of each byte once.
    let mut searched: usize = 0;
    let (accept_key, len) = loop {
        if stream.read_buf(&mut buf).await.map_err(Failure::Io)? == 0 {
            return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let ended = buf[searched.saturating_sub(3)..].windows(4).any(|window| window == b"\r\n\r\n");
        searched = buf.len();
        let checked = if ended { check(&buf, refusal) } else { Ok(None) };
        match checked {
            Ok(Some(upgrade)) => break upgrade,
            Ok(None) if buf.len() < MAX_REQUEST_BYTES => buf.reserve(1024),
            Ok(None) => return Err(answer(stream, Failure::Rejected(431, "request headers too large")).await),
            Err(failure) => return Err(answer(stream, failure).await),
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.map_err(Failure::Io)?;
    buf.advance(len);
    // An idle connection should hold no read buffer: the socket allocates one when needed.
    Ok(if buf.is_empty() { BytesMut::new() } else { buf })
}

/// Checks the request in `buf`: `None` while incomplete, else its `Sec-WebSocket-Accept` value
/// and its length.
fn check(buf: &[u8], refusal: Option<Refusal>) -> Result<Option<(String, usize)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Failure::Rejected(431, "too many headers")),
        Err(_) => return Err(Failure::Rejected(400, "not an HTTP request")),
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return Err(Failure::Rejected(400, "a WebSocket upgrade is an HTTP/1.1 GET"));
    }
    let target = request.path.unwrap_or_default();
    // The absolute form (`GET http://host/ws`) names the same path after its authority.
    let path = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |start| &rest[start..]),
        None => target,
    };
    if path.split('?').next() != Some(WS_PATH) {
        return Err(Failure::Rejected(404, "mortar serves WebSocket clients at /ws"));
    }
    if let Some(refusal) = refusal {
        return Err(Failure::Refused(refusal));
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
            .is_some_and(|value| value.split(',').any(|item| item.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Failure::Rejected(400, "not a WebSocket upgrade"));
    }
    if header("sec-websocket-version") != Some(b"13") {
        return Err(Failure::Rejected(426, "WebSocket version 13 only"));
    }
    // §4.1: the key is 16 random bytes in base64.
    let Some(key) = header("sec-websocket-key")
        .filter(|key| STANDARD.decode(key.trim_ascii()).is_ok_and(|nonce| nonce.len() == 16))
    else {
        return Err(Failure::Rejected(400, "no Sec-WebSocket-Key of 16 bytes in base64"));
    };
    Ok(Some((accept_key(key), len)))
}

/// The `Sec-WebSocket-Accept` value for the client's `key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(sha1.finalize())
}

/// Answers a refused or rejected upgrade with its status and a one-line body; returns `failure`.
async fn answer(stream: &mut TcpStream, failure: Failure) -> Failure {
    let (status, text, body) = match &failure {
        Failure::Refused(Refusal::PerIp) => {
            (429, "Too Many Requests", "too many connections from your address")
        }
        Failure::Refused(_) => (503, "Service Unavailable", "the server is full"),
        Failure::Rejected(status, reason) => {
            let text = match status {
                404 => "Not Found",
                426 => "Upgrade Required",
                431 => "Request Header Fields Too Large",
                _ => "Bad Request",
            };
            (*status, text, *reason)
        }
        Failure::Io(_) => return failure,
    };
    let version = if status == 426 { "Sec-WebSocket-Version: 13\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {text}\r\n{version}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = stream.write_all(response.as_bytes()).await;
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn the_rfc_example_key_is_answered() {
        let (accept, len) = check(UPGRADE.as_bytes(), None).unwrap().unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(len, UPGRADE.len());
    }

    /// Over a real connection: a request sent a few bytes at a time, with the client's first frame
    /// right behind it, is answered 101 and the frame's bytes are handed on; a bad one gets its
    /// status.
    #[tokio::test]
    async fn a_trickled_request_is_upgraded_and_what_follows_it_kept() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (request, expect) in [
            (format!("{UPGRADE}\u{82}\u{80}"), "HTTP/1.1 101 "),
            ("GET /x HTTP/1.1\r\n\r\n".into(), "HTTP/1.1 404 "),
        ] {
            let client = tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                client.set_nodelay(true).unwrap();
                for piece in request.as_bytes().chunks(7) {
                    client.write_all(piece).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let mut answer = String::new();
                let _ = client.read_to_string(&mut answer).await;
                answer
            });
            let (mut server, _) = listener.accept().await.unwrap();
            let accepted = accept(&mut server, None).await;
            drop(server);
            let answer = client.await.unwrap();
            assert!(answer.starts_with(expect), "{answer:?}");
            match accepted {
                Ok(rest) => assert_eq!(&rest[..], "\u{82}\u{80}".as_bytes()),
                Err(Failure::Rejected(404, _)) => assert!(answer.ends_with("at /ws\n")),
                Err(other) => panic!("{other}"),
            }
        }
    }

    #[test]
    fn an_incomplete_request_waits_and_a_bad_one_is_rejected() {
        assert!(matches!(check(&UPGRADE.as_bytes()[..UPGRADE.len() - 1], None), Ok(None)));
        let status = |request: String| match check(request.as_bytes(), None) {
            Err(Failure::Rejected(status, _)) => status,
            other => panic!("{request:?} was not rejected: {other:?}"),
        };
        assert_eq!(status(UPGRADE.replace("GET /ws", "GET /other")), 404);
        assert_eq!(status(UPGRADE.replace("GET", "POST")), 400);
        assert_eq!(status(UPGRADE.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(status(UPGRADE.replace("Upgrade: websocket", "Upgrade: h2c")), 400);
        assert_eq!(status(UPGRADE.replace("keep-alive, Upgrade", "keep-alive")), 400);
        assert_eq!(status(UPGRADE.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(status(UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")), 400);
        assert_eq!(status("\x16\x03\x01 not http\r\n\r\n".into()), 400);
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(UPGRADE.replace("Host: localhost\r\n", &many)), 431);
        assert_eq!(status(UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")), 400);
        // Neither a query string nor the absolute form's scheme and authority are part of the path.
        assert!(
            check(UPGRADE.replace("GET /ws", "GET http://localhost:4000/ws").as_bytes(), None)
                .unwrap()
                .is_some()
        );
        assert_eq!(status(UPGRADE.replace("GET /ws", "GET http://localhost:4000/other")), 404);
        assert!(check(UPGRADE.replace("GET /ws", "GET /ws?token=1").as_bytes(), None).unwrap().is_some());
        // Limits answer once the request is known to be an upgrade to the right path.
        assert!(matches!(
            check(UPGRADE.as_bytes(), Some(Refusal::PerIp)),
            Err(Failure::Refused(Refusal::PerIp))
        ));
    }
}
