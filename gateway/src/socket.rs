//! A client's WebSocket and its outgoing queue, driven from the agent's one task: frames the agent
//! queues are written as the socket takes them (unless the agent holds pushes back, see
//! `gateway.push_flush_ms`), and reading pauses while the queue is full, so a client that does not
//! read is held back by TCP instead of buffered without end.
//!
//! One task for both directions: a reply goes from the handler to the socket without waking
//! another task, which measured about a tenth more requests per second than a writer task fed by
//! a channel.
//!
//! The frames are the gateway's own ([`websocket::frame`]): read out of one buffer per connection
//! (a binary frame's payload is a slice of it), written into another, so the frames queued
//! between two writes leave in one system call.

use crate::{
    envelope::Envelope,
    websocket::frame::{self, Frame, Reader, Violation, close_code},
};
use bytes::{Buf as _, Bytes, BytesMut};
use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::{io::AsyncWrite as _, net::TcpStream};

/// What the agent queues for its client.
#[derive(Debug)]
pub(super) enum Outbound {
    /// One binary frame: an encoded `UserMessage` (a push, shared by the sessions it goes to).
    Frame(Bytes),
    /// A reply, encoded straight into the write buffer: no buffer of its own, one copy of its
    /// body instead of two.
    Reply(Envelope),
    /// The answer to the client's ping.
    Pong(Bytes),
    /// The close frame; the socket writes nothing after it.
    Close(Close),
}

/// A close frame's status code and reason.
#[derive(Debug)]
pub(super) struct Close {
    pub(super) code: u16,
    pub(super) reason: String,
}

/// What the socket did.
pub(super) enum Io {
    /// The client's next frame: `None` when it closed the connection.
    Read(Option<Result<Frame, ReadError>>),
    /// The queue was full and has room again: the agent may take more work.
    Room,
    /// Writing failed: nothing more reaches the client.
    WriteFailed,
}

/// Why the client's frames cannot be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The connection failed.
    Io(io::Error),
    /// The client sent what it may not (see [`Violation`]).
    Violation(Violation),
}

/// Queued frames are written into the write buffer until it holds this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// A write buffer grown past this is let go once written, so a connection that once sent a large
/// frame does not keep its buffer.
const KEEP_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// A queue grown past this many slots is let go once empty, so a connection that once had many
/// frames queued does not keep the room for them.
const KEEP_QUEUE_SLOTS: usize = 16;

pub(super) struct Socket {
    stream: TcpStream,
    /// Bytes read and not yet taken as frames. Allocated when the client first sends something:
    /// an idle connection holds none.
    read: BytesMut,
    /// What is reserved in `read` when it is full.
    read_buffer_bytes: usize,
    reader: Reader,
    /// Frames encoded and not yet written.
    write: BytesMut,
    /// Frames waiting for the write buffer, oldest first.
    outgoing: VecDeque<Outbound>,
    /// Frames the queue holds before reading pauses.
    capacity: usize,
    /// Frames queued are left in the queue (unless it is full) until [`Socket::release`]: the
    /// agent holds pushes back to write more of them at once (`push_flush_ms`).
    holding: bool,
    /// The last read found no whole frame: the socket is read again only once it is readable
    /// (most of a session's wake-ups are for its replies and pushes).
    drained: bool,
}

impl Socket {
    /// The upgraded `stream`, with `read` the bytes the client sent after its handshake, reading
    /// `read_buffer_bytes` at a time and frames up to `max_frame_bytes`, with an outgoing queue
    /// that pauses reading at `capacity` frames.
    pub(super) fn new(
        stream: TcpStream,
        read: BytesMut,
        read_buffer_bytes: usize,
        max_frame_bytes: usize,
        capacity: usize,
    ) -> Self {
        Self {
            stream,
            drained: read.is_empty(),
            read,
            read_buffer_bytes: read_buffer_bytes.max(64),
            reader: Reader::new(max_frame_bytes),
            write: BytesMut::new(),
            outgoing: VecDeque::new(),
            capacity,
            holding: false,
        }
    }

    /// Queues a frame. The agent checks [`Socket::has_room`] before taking more work, so the queue
    /// passes its capacity by at most the one answer to the frame just read.
    pub(super) fn queue(&mut self, item: Outbound) {
        // Room for one at first: a reply is large (its envelope is queued, encoded when written),
        // a `VecDeque` starts at four, and most connections have one frame queued at a time.
        if self.outgoing.capacity() == 0 {
            self.outgoing.reserve_exact(1);
        }
        self.outgoing.push_back(item);
    }

    /// Leaves what is queued from now on in the queue until [`Socket::release`] (or until the
    /// queue is full).
    pub(super) fn hold(&mut self) {
        self.holding = true;
    }

    /// Writes what is queued again.
    pub(super) fn release(&mut self) {
        self.holding = false;
    }

    /// Whether the queue is held (see [`Socket::hold`]).
    pub(super) fn is_holding(&self) -> bool {
        self.holding
    }

    /// Whether the queue is under its capacity.
    pub(super) fn has_room(&self) -> bool {
        self.outgoing.len() < self.capacity
    }

    /// Writes what the socket takes, and waits for the client's next frame (while the queue has
    /// room), for room in a queue that was full, or for a write failure.
    pub(super) async fn io(&mut self) -> Io {
        let full = !self.has_room();
        poll_fn(|cx| {
            if let Poll::Ready(Err(_)) = self.poll_write(cx) {
                return Poll::Ready(Io::WriteFailed);
            }
            if full && self.has_room() {
                return Poll::Ready(Io::Room);
            }
            if self.has_room() {
                if self.drained && self.stream.poll_read_ready(cx).is_pending() {
                    return Poll::Pending;
                }
                match self.poll_read(cx) {
                    Poll::Ready(frame) => {
                        self.drained = false;
                        return Poll::Ready(Io::Read(frame));
                    }
                    Poll::Pending => self.drained = true,
                }
            }
            Poll::Pending
        })
        .await
    }

    /// The client's next frame, read from the buffer, or from the connection when the buffer holds
    /// no whole frame; `None` at the end of the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, ReadError>>> {
        loop {
            match self.reader.read(&mut self.read) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(violation) => return Poll::Ready(Some(Err(ReadError::Violation(violation)))),
            }
            if self.read.len() == self.read.capacity() {
                if self.read.is_empty() {
                    // A fresh buffer rather than the old one reclaimed: a large frame's buffer
                    // is let go with the frame instead of staying with the connection.
                    self.read = BytesMut::with_capacity(self.read_buffer_bytes);
                } else {
                    self.read.reserve(self.read_buffer_bytes);
                }
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(ReadError::Io(error)))),
            }
        }
    }

    /// Writes without reading until the queue has room.
    pub(super) async fn make_room(&mut self) -> io::Result<()> {
        poll_fn(|cx| match self.poll_write(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ if self.has_room() => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        })
        .await
    }

    /// Writes everything queued, also what was held.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        self.release();
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Answers the client's close frame (its `code`, or 1000 when it gave none), dropping what is
    /// queued: nothing else may be sent after a close.
    pub(super) async fn echo_close(&mut self, code: Option<u16>) -> io::Result<()> {
        self.outgoing.clear();
        self.release();
        self.outgoing.push_back(Outbound::Close(Close {
            code: code.unwrap_or(close_code::NORMAL),
            reason: String::new(),
        }));
        self.flush().await
    }

    /// Makes progress writing; ready once everything queued is written (but what is held).
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let take = !self.holding || !self.has_room();
        loop {
            while take && self.write.len() < WRITE_BATCH_BYTES {
                match self.outgoing.pop_front() {
                    Some(Outbound::Frame(payload)) => frame::put(&mut self.write, frame::BINARY, &payload),
                    Some(Outbound::Reply(reply)) => {
                        frame::put_header(&mut self.write, frame::BINARY, reply.encoded_len());
                        reply.encode_to(&mut self.write);
                    }
                    Some(Outbound::Pong(payload)) => frame::put(&mut self.write, frame::PONG, &payload),
                    Some(Outbound::Close(close)) => {
                        frame::put_close(&mut self.write, close.code, &close.reason)
                    }
                    None => break,
                }
            }
            if self.write.is_empty() {
                if self.write.capacity() > KEEP_WRITE_BUFFER_BYTES {
                    self.write = BytesMut::new();
                }
                if self.outgoing.is_empty() && self.outgoing.capacity() > KEEP_QUEUE_SLOTS {
                    self.outgoing = VecDeque::new();
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => self.write.advance(written),
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}
