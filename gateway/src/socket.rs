//! A client's WebSocket and its outgoing queue, driven from the agent's one task: frames the agent
//! queues are written as the socket takes them, and reading pauses while the queue is full, so a
//! client that does not read is held back by TCP instead of buffered without end.
//!
//! One task for both directions: a reply goes from the handler to the socket without waking
//! another task, which measured about a tenth more requests per second than a writer task fed by
//! a channel.

use super::sessions::Outbound;
use futures::{SinkExt as _, StreamExt as _};
use std::{
    collections::VecDeque,
    future::poll_fn,
    task::{Context, Poll, ready},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message},
};

/// What the socket did.
pub(super) enum Io {
    /// The client's next frame: `None` when it closed the connection.
    Read(Option<Result<Message, tungstenite::Error>>),
    /// The queue was full and has room again: the agent may take more work.
    Room,
    /// Writing failed: nothing more reaches the client.
    WriteFailed,
}

pub(super) struct Socket {
    ws: WebSocketStream<TcpStream>,
    /// Frames waiting for the socket, oldest first.
    outgoing: VecDeque<Outbound>,
    /// Frames handed to the WebSocket since its last flush.
    unflushed: bool,
    /// Frames the queue holds before reading pauses.
    capacity: usize,
    /// The WebSocket's last read found no whole frame: it is read again only once the socket is
    /// readable. A read costs more than a readiness check (tungstenite zero-fills its read
    /// buffer first), and most of a session's wake-ups are for its replies and pushes.
    drained: bool,
}

impl Socket {
    /// `ws` with an outgoing queue that pauses reading at `capacity` frames.
    pub(super) fn new(ws: WebSocketStream<TcpStream>, capacity: usize) -> Self {
        Self { ws, outgoing: VecDeque::new(), unflushed: false, capacity, drained: false }
    }

    /// Queues a frame. The agent checks [`Socket::has_room`] before taking more work, so the queue
    /// passes its capacity by at most the one answer to the frame just read.
    pub(super) fn queue(&mut self, item: Outbound) {
        self.outgoing.push_back(item);
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
                if self.drained && self.ws.get_ref().poll_read_ready(cx).is_pending() {
                    return Poll::Pending;
                }
                match self.ws.poll_next_unpin(cx) {
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

    /// Writes without reading until the queue has room.
    pub(super) async fn make_room(&mut self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| match self.poll_write(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ if self.has_room() => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        })
        .await
    }

    /// Writes and flushes everything queued.
    pub(super) async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Sends the reply to the client's close frame, which the WebSocket queued when it read it;
    /// nothing else may be sent after a close.
    pub(super) async fn echo_close(&mut self) -> Result<(), tungstenite::Error> {
        poll_fn(|cx| self.ws.poll_flush_unpin(cx)).await
    }

    /// Makes progress writing; ready once everything queued is written and flushed.
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tungstenite::Error>> {
        while !self.outgoing.is_empty() {
            ready!(self.ws.poll_ready_unpin(cx))?;
            let message = match self.outgoing.pop_front() {
                Some(Outbound::Frame(frame)) => Message::Binary(frame),
                Some(Outbound::Close(frame)) => Message::Close(Some(frame)),
                None => break,
            };
            self.ws.start_send_unpin(message)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(self.ws.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}
