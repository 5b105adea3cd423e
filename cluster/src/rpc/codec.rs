//! The serde format of RPC frames: postcard.
//!
//! tarpc's ready-made formats are bincode 1.3 (no longer developed) and JSON (which writes every
//! `Bytes` body as an array of numbers). postcard is maintained, compact (varints, bytes as
//! length + raw) and fast; docs/cluster.md has the measurement that chose it.

use bytes::Bytes;
use futures::{Sink, Stream};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::VecDeque,
    io,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Items come out, sink items go in: the transport owns neither (and is `Send` whatever they are).
type Directions<Item, SinkItem> = (fn() -> Item, fn(SinkItem));

/// A TCP connection after the handshake: length-delimited frames.
pub type Frames = Framed<TcpStream, LengthDelimitedCodec>;

/// The tarpc transport over `frames`, for either side of a service.
pub fn transport<Item, SinkItem>(frames: Frames) -> Transport<Item, SinkItem> {
    let max_frame = frames.codec().max_frame_length();
    Transport {
        frames,
        max_frame,
        refused: Refused::default(),
        dirty: false,
        yielded: false,
        directions: PhantomData,
    }
}

/// A tarpc transport over a connection's frames: one postcard message per frame.
///
/// **A message too large for the peer is not sent.** The nodes of a cluster share
/// `rpc.max_frame_bytes`, and a peer closes the connection on a larger frame, failing every call
/// on it. Instead ([`Oversized`]), a request fails its own call at once and a response becomes an
/// error response; the connection and its other calls go on.
///
/// **Messages ready together leave in one write.** tarpc flushes as soon as it has nothing more
/// to send right now. With one task per request, that was one `writev` per message on both sides
/// (0.8 per request on the gateway, 0.94 on the worker, measured at 44k req/s): the kernel's
/// loopback path on each write then cost more than everything else the gateway does. A flush
/// first lets the other ready tasks run once, so what they send in that round leaves in the same
/// write; a message waits for at most that round.
pub struct Transport<Item, SinkItem> {
    frames: Frames,
    /// The peer's frame limit: this side's own (`rpc.max_frame_bytes`).
    max_frame: usize,
    /// Answers to requests that were too large to send, read before the next frame.
    refused: Refused<Item>,
    /// Something was sent since the last flush.
    dirty: bool,
    /// This flush has yielded once already.
    yielded: bool,
    directions: PhantomData<Directions<Item, SinkItem>>,
}

// Nothing of it is pinned: the messages it holds are moved in and out.
impl<Item, SinkItem> Unpin for Transport<Item, SinkItem> {}

/// What a transport does with a message over the peer's frame limit, instead of sending it.
pub trait Oversized<Item>: Sized {
    /// `self` encodes to `len` bytes, over the frame limit `limit`.
    fn instead(self, len: usize, limit: usize) -> Instead<Self, Item>;
}

/// What a transport sends, or reads, instead of a message too large to send.
pub enum Instead<SinkItem, Item> {
    /// This smaller message is sent.
    Send(SinkItem),
    /// Nothing is sent; this is read next, as if the peer had sent it.
    Read(Item),
}

/// Answers a transport reads instead of the replies to requests it did not send.
///
/// The task that sent them reads them: tarpc reads and writes a connection from one task, and
/// flushes after sending, which wakes that task while one waits ([`Refused::wake`]).
pub(super) struct Refused<Item>(VecDeque<Item>);

impl<Item> Default for Refused<Item> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<Item> Refused<Item> {
    pub(super) fn pop(&mut self) -> Option<Item> {
        self.0.pop_front()
    }

    pub(super) fn push(&mut self, answer: Item) {
        self.0.push_back(answer);
    }

    /// Wakes the task of `cx` if an answer waits to be read.
    pub(super) fn wake(&self, cx: &Context<'_>) {
        if !self.0.is_empty() {
            cx.waker().wake_by_ref();
        }
    }
}

/// A request too large fails its call with an `InvalidData` server error (`INTERNAL` for a
/// caller of the cluster's services); a cancel is a few bytes.
impl<Req, Resp> Oversized<tarpc::Response<Resp>> for tarpc::ClientMessage<Req> {
    fn instead(self, len: usize, limit: usize) -> Instead<Self, tarpc::Response<Resp>> {
        match self {
            tarpc::ClientMessage::Request(request) => {
                tracing::warn!(len, limit, "RPC request over rpc.max_frame_bytes: not sent, its call fails");
                let detail =
                    format!("the request of {len} bytes is over the cluster's frame limit ({limit})");
                let error = tarpc::ServerError::new(io::ErrorKind::InvalidData, detail);
                Instead::Read(tarpc::Response { request_id: request.id, message: Err(error) })
            }
            other => Instead::Send(other),
        }
    }
}

/// A response too large becomes a server error for its caller (`INTERNAL`). Its caller reads
/// the kind as `Other`, as any server error's over TCP: tarpc writes a kind as an `i32` and
/// reads it as a `u32`, which postcard encodes differently; the detail says what happened.
impl<Req, Resp> Oversized<tarpc::ClientMessage<Req>> for tarpc::Response<Resp> {
    fn instead(self, len: usize, limit: usize) -> Instead<Self, tarpc::ClientMessage<Req>> {
        tracing::warn!(len, limit, "RPC reply over rpc.max_frame_bytes: its caller gets an error instead");
        let detail = format!("the reply of {len} bytes is over the cluster's frame limit ({limit})");
        let error = tarpc::ServerError::new(io::ErrorKind::InvalidData, detail);
        Instead::Send(tarpc::Response { request_id: self.request_id, message: Err(error) })
    }
}

impl<Item: DeserializeOwned, SinkItem> Stream for Transport<Item, SinkItem> {
    type Item = Result<Item, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(answer) = self.refused.pop() {
            return Poll::Ready(Some(Ok(answer)));
        }
        match Pin::new(&mut self.frames).poll_next(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(decode(&frame))),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Item, SinkItem> Sink<SinkItem> for Transport<Item, SinkItem>
where
    SinkItem: Serialize + Oversized<Item>,
{
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Sink::<Bytes>::poll_ready(Pin::new(&mut self.frames), cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: SinkItem) -> Result<(), io::Error> {
        let mut frame = encode(&item)?;
        if frame.len() > self.max_frame {
            match item.instead(frame.len(), self.max_frame) {
                Instead::Send(smaller) => frame = encode(&smaller)?,
                Instead::Read(answer) => {
                    self.refused.push(answer);
                    return Ok(());
                }
            }
        }
        self.dirty = true;
        Pin::new(&mut self.frames).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.refused.wake(cx);
        if self.dirty && !self.yielded {
            // Tokio runs a task that woke itself after the tasks already waiting.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let flushed = Sink::<Bytes>::poll_flush(Pin::new(&mut self.frames), cx);
        if flushed.is_ready() {
            self.dirty = false;
            self.yielded = false;
        }
        flushed
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Sink::<Bytes>::poll_close(Pin::new(&mut self.frames), cx)
    }
}

/// Frames on `stream`, refusing any longer than `max_frame_bytes`.
pub fn frames(stream: TcpStream, max_frame_bytes: usize) -> Frames {
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(max_frame_bytes).new_codec())
}

/// Encodes one message as the transports do. Starting with room for a typical relayed request
/// saves the buffer's regrowth: a quarter of the encoding time measured (docs/cluster.md).
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, io::Error> {
    postcard::to_extend(value, Vec::with_capacity(256))
        .map(Bytes::from)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Decodes one message as the transports do.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, io::Error> {
    postcard::from_bytes(frame).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use futures::{StreamExt as _, future};
    use std::time::{Duration, Instant};
    use tarpc::{
        client::RpcError,
        context,
        server::{BaseChannel, Channel as _},
    };
    use tokio::net::TcpListener;

    #[tarpc::service]
    pub(crate) trait Greet {
        async fn greet(name: String) -> String;
        /// A reply of `len` bytes.
        async fn fill(len: u32) -> String;
    }

    #[derive(Clone)]
    pub(crate) struct Greeter;

    impl Greet for Greeter {
        async fn greet(self, _: context::Context, name: String) -> String {
            format!("hello {name}")
        }

        async fn fill(self, _: context::Context, len: u32) -> String {
            "x".repeat(len as usize)
        }
    }

    /// Serves `Greeter` on `transport`'s messages until the connection ends.
    pub(crate) async fn serve_greeter<T>(transport: T)
    where
        T: tarpc::Transport<tarpc::Response<GreetResponse>, tarpc::ClientMessage<GreetRequest>> + 'static,
    {
        BaseChannel::with_defaults(transport)
            .execute(Greeter.serve())
            .for_each(|call| async {
                tokio::spawn(call);
            })
            .await;
    }

    /// Expects `call` to fail at once, well before its 10 s deadline, with a server error that
    /// says `what` was over the frame limit.
    pub(crate) async fn refused_at_once<T: std::fmt::Debug>(
        call: impl Future<Output = Result<T, RpcError>>,
        what: &str,
    ) {
        let started = Instant::now();
        let failed = tokio::time::timeout(Duration::from_secs(5), call).await.expect("failed at once");
        let Err(RpcError::Server(error)) = failed else { panic!("a server error: {failed:?}") };
        assert!(error.detail.contains(what) && error.detail.contains("frame limit"), "{}", error.detail);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_message_over_the_frame_limit_fails_its_own_call_and_the_connection_stays() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve_greeter(transport(frames(socket, 4096))).await;
        });
        let socket = TcpStream::connect(addr).await.unwrap();
        let client = GreetClient::new(Default::default(), transport(frames(socket, 4096))).spawn();

        // A request over 4 KiB is not sent; neither is a reply.
        refused_at_once(client.greet(context::current(), "y".repeat(5000)), "request of").await;
        refused_at_once(client.fill(context::current(), 5000), "reply of").await;
        // Calls in flight beside them and after them are answered on the same connection.
        let (fits, greeting) = future::join(
            client.fill(context::current(), 4000),
            client.greet(context::current(), "again".into()),
        )
        .await;
        assert_eq!(fits.unwrap().len(), 4000);
        assert_eq!(greeting.unwrap(), "hello again");
        assert!(!server.is_finished(), "the connection stays open");
    }
}
