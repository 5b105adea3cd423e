//! The gateway's side of the WebSocket protocol (RFC 6455): the opening handshake and the frames.
//!
//! The gateway's own, on `httparse`, `sha1` and `base64`: it measured a third of the instructions
//! tungstenite spends per echoed frame, it reads into a buffer without zero-filling it first, and
//! it holds no read buffer for an idle connection (tungstenite's kept one per connection, and
//! zero-filled it before every read). The crates that frame as fast hold an 8 KiB buffer per
//! connection from the start, or read frames in futures a `select!` cannot cancel safely.

pub(crate) mod frame;
pub(crate) mod handshake;
