//! The relay stream: client requests pipelined on a worker's connection, beside its tarpc service.
//!
//! Every connection to a worker's RPC port carries, after the handshake, length-delimited frames
//! whose first byte says what they are:
//! - `TARPC`: a tarpc message (postcard), for [`WorkerRpc`](super::WorkerRpc)'s services: pings,
//!   internal calls, presence, logins, descriptors, where tarpc's per-call features earn their
//!   cost;
//! - `REQUEST`: a client request relayed by a gateway: an id, the time left until its deadline,
//!   the [`AgentMessage`] without its body (a fixed layout, see `header`), then the body as is;
//! - `REPLY`: the worker's reply to request `id`: its code and reason, then the body;
//! - `DRAINING`: the worker is shutting down and hands request `id` back, as it came.
//!
//! Why not tarpc for client requests: per call it costs a oneshot and a channel hop to its
//! dispatch task, an entry in its deadline queue on both sides, a span, and a copy of the body
//! each way; with a few hundred nanoseconds of handler that was most of what a gateway spent
//! on a request beside the WebSocket (docs/benchmarks.md, "Where the time goes"). Here a caller
//! writes its frame straight into the connection's outgoing buffer and waits for its answer in
//! its slot of the connection's waiting requests; one writer per connection sends whatever piled
//! up meanwhile in one `write`; the reader leaves each reply in its slot and wakes its caller; one
//! task per connection answers those whose deadline passes; bodies are slices of the frame read,
//! not copies.
//!
//! Every request still gets exactly one answer: its reply, `Draining`, or an error when its
//! deadline passes ([`RpcError::DeadlineExceeded`]) or the connection ends
//! ([`RpcError::Shutdown`]) first. The worker stops a request's handler at its deadline.

use super::{
    AgentMessage, Handled, Reply,
    codec::{Frames, Instead, Oversized, Refused},
    workers::TIMED_OUT,
};
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures::{Sink, Stream, StreamExt as _, future::BoxFuture};
use mortar_abi::Code;
use serde::{Serialize, de::DeserializeOwned};
use std::{
    io,
    marker::PhantomData,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};
use tarpc::client::RpcError;
use tokio::{
    io::AsyncWriteExt as _,
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::{Notify, mpsc},
};
use tokio_util::{
    codec::{FramedRead, LengthDelimitedCodec},
    sync::CancellationToken,
};

mod header;
mod waiting;

use waiting::{Forget, Waiting, expire};

const TARPC: u8 = 0;
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
const DRAINING: u8 = 3;

/// How many tarpc messages read wait for tarpc at most; the reader waits beyond.
const TARPC_QUEUE: usize = 1024;

/// What the worker side runs for each relayed request.
pub trait RelayHandler: Send + Sync + 'static {
    /// Handles `msg`, whose client waits until `deadline`.
    fn handle(&self, msg: AgentMessage, deadline: Instant) -> BoxFuture<'static, Handled>;
}

/// The tarpc side of a connection: a tarpc transport whose messages travel as `TARPC` frames.
///
/// A message over the peer's frame limit is not sent: see [`codec::Transport`](super::codec::Transport).
pub struct TarpcSide<Item, SinkItem> {
    inbound: mpsc::Receiver<Item>,
    outbox: Arc<Outbox>,
    /// Answers to requests that were too large to send, read before the next message.
    refused: Refused<Item>,
    sends: PhantomData<fn(SinkItem)>,
}

// Nothing of it is pinned: the messages it holds are moved in and out.
impl<Item, SinkItem> Unpin for TarpcSide<Item, SinkItem> {}

impl<Item, SinkItem> Stream for TarpcSide<Item, SinkItem> {
    type Item = Result<Item, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(answer) = self.refused.pop() {
            return Poll::Ready(Some(Ok(answer)));
        }
        self.inbound.poll_recv(cx).map(|item| item.map(Ok))
    }
}

impl<Item, SinkItem: Serialize + Oversized<Item>> Sink<SinkItem> for TarpcSide<Item, SinkItem> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(self.outbox.open())
    }

    fn start_send(mut self: Pin<&mut Self>, item: SinkItem) -> Result<(), io::Error> {
        let len = match self.outbox.tarpc(&item) {
            Err(Unsent::TooLarge(len)) => len,
            sent => return sent.map_err(Unsent::into_io),
        };
        match item.instead(len, self.outbox.max_frame) {
            Instead::Send(smaller) => self.outbox.tarpc(&smaller).map_err(Unsent::into_io),
            Instead::Read(answer) => {
                self.refused.push(answer);
                Ok(())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.refused.wake(cx);
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// A connection's outgoing frames, written by whoever has one and sent by its one writer.
struct Outbox {
    /// Length-prefixed frames not sent yet.
    buf: Mutex<BytesMut>,
    /// Wakes the writer.
    wake: Notify,
    /// Cancelled when the connection ends, either way.
    closed: CancellationToken,
    /// The largest relayed frame sent: this side's own limit on frames read, since the nodes of
    /// a cluster share `rpc.max_frame_bytes`. A larger one would make the peer close the
    /// connection, failing every request on it.
    max_frame: usize,
    /// Relayed requests are refused while this many bytes wait behind the one being written:
    /// the worker does not read, and its requests would otherwise pile up without bound.
    max_queued: usize,
}

/// Why a relayed frame was not queued.
#[derive(Debug)]
enum Unsent {
    /// The connection ended.
    Closed,
    /// The frame would be this many bytes, over [`Outbox::max_frame`].
    TooLarge(usize),
    /// [`Outbox::max_queued`] bytes wait to be sent already.
    Backlog,
    /// It did not encode.
    Invalid(io::Error),
}

impl Unsent {
    /// The error a tarpc transport fails with.
    fn into_io(self) -> io::Error {
        match self {
            Self::Closed => io::ErrorKind::BrokenPipe.into(),
            Self::Invalid(error) => error,
            Self::TooLarge(_) | Self::Backlog => io::ErrorKind::InvalidData.into(),
        }
    }
}

impl Outbox {
    fn new(max_frame: usize, max_queued: usize) -> Arc<Self> {
        Arc::new(Self {
            buf: Mutex::new(BytesMut::with_capacity(16 * 1024)),
            wake: Notify::new(),
            closed: CancellationToken::new(),
            max_frame,
            max_queued,
        })
    }

    fn open(&self) -> Result<(), io::Error> {
        match self.closed.is_cancelled() {
            true => Err(io::ErrorKind::BrokenPipe.into()),
            false => Ok(()),
        }
    }

    /// Appends one tarpc message, unless it is larger than `max_frame`, and wakes the writer.
    fn tarpc(&self, message: &impl Serialize) -> Result<(), Unsent> {
        self.open().map_err(|_| Unsent::Closed)?;
        self.append(usize::MAX, self.max_frame, |buf| {
            buf.put_u8(TARPC);
            extend(buf, message)
        })?;
        self.wake.notify_one();
        Ok(())
    }

    /// Appends one relayed frame as [`Outbox::frame`] does, unless it is larger than
    /// `max_frame`, or (a request, `limited`) `max_queued` bytes wait already.
    fn relayed(
        &self,
        limited: bool,
        write: impl FnOnce(&mut BytesMut) -> Result<(), io::Error>,
    ) -> Result<(), Unsent> {
        if self.closed.is_cancelled() {
            return Err(Unsent::Closed);
        }
        self.append(if limited { self.max_queued } else { usize::MAX }, self.max_frame, write)?;
        self.wake.notify_one();
        Ok(())
    }

    fn append(
        &self,
        max_queued: usize,
        max_frame: usize,
        write: impl FnOnce(&mut BytesMut) -> Result<(), io::Error>,
    ) -> Result<(), Unsent> {
        let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let start = buf.len();
        if start >= max_queued {
            return Err(Unsent::Backlog);
        }
        buf.put_u32(0);
        if let Err(error) = write(&mut buf) {
            buf.truncate(start);
            return Err(Unsent::Invalid(error));
        }
        let len = buf.len() - start - 4;
        let Some(prefix) = u32::try_from(len).ok().filter(|_| len <= max_frame) else {
            buf.truncate(start);
            return Err(Unsent::TooLarge(len));
        };
        buf[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    }

    /// Sends what piles up until the connection ends or a write fails.
    async fn write(self: Arc<Self>, mut io: OwnedWriteHalf) {
        let mut sending = BytesMut::with_capacity(16 * 1024);
        let closed = self.closed.clone();
        let closed = closed.cancelled();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = &mut closed => break,
            }
            // Let the other tasks that are ready run first: what they write leaves in this write.
            tokio::task::yield_now().await;
            std::mem::swap(&mut sending, &mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner));
            if sending.is_empty() {
                continue;
            }
            if let Err(error) = io.write_all(&sending).await {
                tracing::debug!(%error, "relay stream: write failed");
                break;
            }
            sending.clear();
        }
        self.closed.cancel();
    }
}

/// A worker connection's sending side: relayed requests and tarpc's messages. Cheap to clone.
#[derive(Clone)]
pub struct RelayStream {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    outbox: Arc<Outbox>,
    waiting: Arc<Mutex<Waiting>>,
    /// Tells [`expire`] of a request due sooner than it planned to look.
    sooner: Arc<Notify>,
}

impl Drop for ClientInner {
    /// Nobody can send on the connection any more, and nobody waits on it: it closes.
    fn drop(&mut self) {
        self.outbox.closed.cancel();
    }
}

impl RelayStream {
    /// Takes over `frames`, a connection to a worker after the handshake: this relays requests
    /// on it and `tarpc` is the transport for a tarpc client on it. `driver` runs the connection
    /// and completes when it ends (the caller spawns it): it fails, the worker closes it, or every
    /// clone of the stream is dropped; requests waiting then get [`RpcError::Shutdown`]. While
    /// `max_queued` bytes wait to be sent (the worker does not read), requests fail at once with
    /// [`RpcError::Send`] instead of piling up.
    pub fn connect<Item, SinkItem>(
        frames: Frames,
        max_queued: usize,
    ) -> (Self, TarpcSide<Item, SinkItem>, BoxFuture<'static, ()>)
    where
        Item: DeserializeOwned + Send + 'static,
        SinkItem: Serialize,
    {
        let (reader, writer, max_frame) = split(frames);
        let outbox = Outbox::new(max_frame, max_queued);
        let (tarpc_in, inbound) = mpsc::channel(TARPC_QUEUE);
        let waiting = Arc::new(Mutex::new(Waiting::new()));
        let sooner = Arc::new(Notify::new());
        let inner = ClientInner { outbox: outbox.clone(), waiting: waiting.clone(), sooner: sooner.clone() };
        let stream = Self { inner: Arc::new(inner) };
        let tarpc =
            TarpcSide { inbound, outbox: outbox.clone(), refused: Refused::default(), sends: PhantomData };
        // The writer ends when the connection fails, the reader ends, or every handle is dropped.
        let driver = async move {
            tokio::select! {
                () = read_replies(reader, &waiting, tarpc_in) => outbox.closed.cancel(),
                () = outbox.clone().write(writer) => {}
                () = expire(&waiting, &sooner) => {}
            }
            let ended = waiting.lock().unwrap_or_else(PoisonError::into_inner).end();
            ended.into_iter().for_each(Waker::wake);
        };
        (stream, tarpc, Box::pin(driver))
    }

    /// Relays `msg` at once, and the future waits for the worker's answer until `deadline`. It
    /// holds no copy of `msg`: a session boxes one such future per request, whose size is an
    /// allocation each time.
    ///
    /// # Errors
    /// [`RpcError::DeadlineExceeded`] when the deadline passes first; [`RpcError::Shutdown`] when
    /// the connection ended (or ends) before the answer; [`RpcError::Send`] when the connection's
    /// backlog is full; [`RpcError::Server`] when the request is larger than the connection's
    /// frame limit (`rpc.max_frame_bytes`) and was not sent.
    pub fn handle(
        &self,
        msg: &AgentMessage,
        deadline: Instant,
    ) -> impl Future<Output = Result<Handled, RpcError>> + Send + use<> {
        let sent = self.send(msg, deadline);
        async move {
            let mut forget = sent?;
            let answer = std::future::poll_fn(|cx| {
                forget.waiting.lock().unwrap_or_else(PoisonError::into_inner).poll_answer(forget.id, cx)
            })
            .await;
            forget.answered = true;
            answer
        }
    }

    /// Writes `msg`'s frame and enters it among the waiting requests.
    fn send(&self, msg: &AgentMessage, deadline: Instant) -> Result<Forget, RpcError> {
        let entered = self.inner.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(deadline);
        let (id, sooner) = entered.ok_or(RpcError::Shutdown)?;
        if sooner {
            self.inner.sooner.notify_one();
        }
        // Dropped on an error below, or with the future before the answer: the request leaves
        // the waiting ones.
        let forget = Forget { waiting: self.inner.waiting.clone(), id, answered: false };
        let budget = deadline.saturating_duration_since(Instant::now());
        match self.inner.outbox.relayed(true, |buf| request(buf, REQUEST, id, budget, msg)) {
            Ok(()) => Ok(forget),
            Err(Unsent::Closed) => Err(RpcError::Shutdown),
            Err(Unsent::Backlog) => {
                let backlog =
                    format!("over rpc.max_queued_bytes ({}) wait unsent", self.inner.outbox.max_queued);
                Err(RpcError::Send(backlog.into()))
            }
            Err(Unsent::TooLarge(len)) => {
                let detail = format!("a request of {len} bytes is over rpc.max_frame_bytes");
                Err(RpcError::Server(tarpc::ServerError::new(io::ErrorKind::FileTooLarge, detail)))
            }
            Err(Unsent::Invalid(error)) => {
                Err(RpcError::Server(tarpc::ServerError::new(error.kind(), error.to_string())))
            }
        }
    }
}

/// Serves a worker's side of `frames`, a connection after the handshake: relayed requests run
/// `handler` each on its own task; `tarpc` serves the tarpc side. Completes when the peer hangs
/// up or the connection fails; requests still running finish, their answers are dropped.
pub async fn serve<Item, SinkItem, F, Fut>(frames: Frames, handler: Arc<dyn RelayHandler>, tarpc: F)
where
    Item: DeserializeOwned + Send + 'static,
    SinkItem: Serialize,
    F: FnOnce(TarpcSide<Item, SinkItem>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (reader, writer, max_frame) = split(frames);
    // Replies are not limited but by size: the gateway's requests in flight bound them.
    let outbox = Outbox::new(max_frame, usize::MAX);
    let (tarpc_in, inbound) = mpsc::channel(TARPC_QUEUE);
    let side = TarpcSide { inbound, outbox: outbox.clone(), refused: Refused::default(), sends: PhantomData };
    let reading = read_requests(reader, handler, &outbox, tarpc_in);
    tokio::select! {
        ((), ()) = async { tokio::join!(reading, tarpc(side)) } => {}
        () = outbox.clone().write(writer) => {}
    }
    outbox.closed.cancel();
}

type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;

/// The connection's read and write halves, and its frame limit; the reader keeps what the
/// handshake read ahead.
fn split(frames: Frames) -> (Reader, OwnedWriteHalf, usize) {
    let parts = frames.into_parts();
    let max_frame = parts.codec.max_frame_length();
    let (read, write) = parts.io.into_split();
    let mut reader = FramedRead::new(read, parts.codec);
    reader.read_buffer_mut().extend_from_slice(&parts.read_buf);
    (reader, write, max_frame)
}

/// The gateway side's reader: completes the waiting requests, hands tarpc its messages.
async fn read_replies<Item: DeserializeOwned>(
    mut reader: Reader,
    waiting: &Mutex<Waiting>,
    tarpc: mpsc::Sender<Item>,
) {
    while let Some(frame) = reader.next().await {
        let Ok(frame) = frame else { break };
        let mut frame = frame.freeze();
        let (id, handled) = match frame.first().copied() {
            Some(TARPC) if to_tarpc(&tarpc, &mut frame).await => continue,
            Some(REPLY) => match reply(&frame) {
                Ok(answer) => answer,
                Err(_) => break,
            },
            Some(DRAINING) => match header::request(&frame) {
                Ok((id, _, msg)) => (id, Handled::Draining(Box::new(msg))),
                Err(_) => break,
            },
            _ => break,
        };
        // Nobody waits when the caller stopped waiting (its deadline passed, or it left).
        let waker = waiting.lock().unwrap_or_else(PoisonError::into_inner).answer(id, Some(handled));
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The worker side's reader: runs each relayed request on its own task, hands tarpc its messages.
async fn read_requests<Item: DeserializeOwned>(
    mut reader: Reader,
    handler: Arc<dyn RelayHandler>,
    outbox: &Arc<Outbox>,
    tarpc: mpsc::Sender<Item>,
) {
    while let Some(frame) = reader.next().await {
        let Ok(frame) = frame else { break };
        let mut frame = frame.freeze();
        match frame.first().copied() {
            Some(TARPC) if to_tarpc(&tarpc, &mut frame).await => {}
            Some(REQUEST) => {
                let Ok((id, budget, msg)) = header::request(&frame) else { break };
                let deadline = Instant::now() + budget;
                let (handler, outbox) = (handler.clone(), outbox.clone());
                tokio::spawn(async move {
                    let (session, seq) = (msg.session, msg.seq);
                    let handled = tokio::time::timeout_at(deadline.into(), handler.handle(msg, deadline))
                        .await
                        .unwrap_or_else(|_| Handled::Reply(Reply::because(Code::TIMEOUT, TIMED_OUT)));
                    send_answer(&outbox, id, (session, seq), &handled);
                });
            }
            _ => break,
        }
    }
}

/// Hands tarpc the message of a `TARPC` frame; false when it does not decode or tarpc is gone.
async fn to_tarpc<Item: DeserializeOwned>(tarpc: &mpsc::Sender<Item>, frame: &mut Bytes) -> bool {
    frame.advance(1);
    match decode(frame) {
        Ok(item) => tarpc.send(item).await.is_ok(),
        Err(_) => false,
    }
}

/// Queues the answer to request `id` (of `session`, `seq`). One over the frame limit becomes
/// `INTERNAL`: sent, it would close the connection and fail every request on it. When the
/// connection is closed, nobody waits for the answer.
fn send_answer(outbox: &Outbox, id: u64, (session, seq): (u64, u32), handled: &Handled) {
    if let Err(Unsent::TooLarge(len)) = outbox.relayed(false, |buf| answer(buf, id, handled)) {
        tracing::warn!(session, seq, len, "reply over rpc.max_frame_bytes; the client gets INTERNAL");
        let reason = format!("the reply of {len} bytes is over the cluster's frame limit");
        let internal = Handled::Reply(Reply::because(Code::INTERNAL, reason));
        let _ = outbox.relayed(false, |buf| answer(buf, id, &internal));
    }
}

/// Writes the `REPLY` or `DRAINING` frame of request `id`.
fn answer(buf: &mut BytesMut, id: u64, handled: &Handled) -> Result<(), io::Error> {
    match handled {
        Handled::Reply(reply) => {
            buf.put_u8(REPLY);
            header::put_reply(buf, id, reply)
        }
        Handled::Draining(msg) => request(buf, DRAINING, id, Duration::ZERO, msg),
    }
}

/// Writes the `REQUEST` (or `DRAINING`) frame of request `id`, which has `budget` left.
fn request(
    buf: &mut BytesMut,
    tag: u8,
    id: u64,
    budget: Duration,
    msg: &AgentMessage,
) -> Result<(), io::Error> {
    buf.put_u8(tag);
    header::put_request(buf, id, budget, msg)
}

/// A `REPLY` frame's id and reply; the body is a slice of `frame`.
fn reply(frame: &Bytes) -> Result<(u64, Handled), io::Error> {
    let (id, reply) = header::reply(frame)?;
    Ok((id, Handled::Reply(reply)))
}

fn extend<T: Serialize>(buf: &mut BytesMut, value: &T) -> Result<(), io::Error> {
    postcard::serialize_with_flavor(value, Appended(buf)).map_err(invalid)
}

/// Postcard's output appended to a buffer a slice at a time (its `to_extend` goes through
/// `Extend<u8>`, which `BytesMut` takes a byte at a time: 7% of a gateway's instructions per
/// relayed request went there).
struct Appended<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Appended<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    postcard::from_bytes(bytes).map_err(invalid)
}

fn invalid(error: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::codec::{
        self,
        tests::{GreetClient, refused_at_once, serve_greeter},
    };
    use tokio::net::{TcpListener, TcpStream};

    /// Echoes the body after `seq` ms; hands back requests of session 0 as a draining worker does;
    /// answers session 2 with a body of as many KiB as the request's.
    struct Echo;

    impl RelayHandler for Echo {
        fn handle(&self, msg: AgentMessage, _: Instant) -> BoxFuture<'static, Handled> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(msg.seq))).await;
                match msg.session {
                    0 => Handled::Draining(Box::new(msg)),
                    2 => Handled::Reply(Reply::ok(vec![7; msg.data.len() << 10].into())),
                    _ => Handled::Reply(Reply::ok(msg.data)),
                }
            })
        }
    }

    fn message(seq: u32, session: u64, data: &'static [u8]) -> AgentMessage {
        AgentMessage {
            main: "echo".into(),
            sub: "say".into(),
            seq,
            data: Bytes::from_static(data),
            session,
            user: Some(7),
            client_ip: [127, 0, 0, 1].into(),
            gateway: "gateway-1".into(),
            trace_id: 99,
        }
    }

    /// A worker serving `Echo` and `Greeter` on a loopback port, and a client's stream and tarpc
    /// client to it; the worker's connection task, which ends when the connection does.
    async fn connected() -> (RelayStream, GreetClient, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve(codec::frames(socket, 1 << 20), Arc::new(Echo), serve_greeter).await;
        });
        let frames = codec::frames(TcpStream::connect(addr).await.unwrap(), 1 << 20);
        let (stream, tarpc, driver) = RelayStream::connect(frames, 1 << 20);
        tokio::spawn(driver);
        let client = GreetClient::new(tarpc::client::Config::default(), tarpc).spawn();
        (stream, client, worker)
    }

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn requests_in_flight_together_each_get_their_own_reply_beside_tarpc_calls() {
        let (stream, client, _worker) = connected().await;
        // Later requests finish first: replies are matched by id, not by order.
        let bodies: [&'static [u8]; 4] = [b"a", b"bb", b"", b"dddd"];
        let requests = bodies.iter().enumerate().map(|(i, body)| {
            let stream = stream.clone();
            async move { stream.handle(&message(40 - 10 * i as u32, 1, body), in_ms(2_000)).await }
        });
        let greeting = client.greet(tarpc::context::current(), "relay".into());
        let (replies, greeting) = tokio::join!(futures::future::join_all(requests), greeting);
        for (reply, body) in replies.into_iter().zip(bodies) {
            let Ok(Handled::Reply(reply)) = reply else { panic!("a reply: {reply:?}") };
            assert_eq!((reply.code, &reply.data[..]), (0, body));
        }
        assert_eq!(greeting.unwrap(), "hello relay");
    }

    #[tokio::test]
    async fn a_draining_worker_hands_the_whole_request_back() {
        let (stream, _client, _worker) = connected().await;
        let sent = message(0, 0, b"body");
        let Ok(Handled::Draining(back)) = stream.handle(&sent, in_ms(2_000)).await else {
            panic!("handed back")
        };
        assert_eq!((&back.main[..], &back.sub[..], back.seq, back.session), ("echo", "say", 0, 0));
        assert_eq!(
            (&back.data[..], back.user, back.trace_id, &back.gateway[..]),
            (&b"body"[..], Some(7), 99, "gateway-1")
        );
        assert_eq!(back.client_ip, sent.client_ip);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_fails_and_its_late_reply_is_dropped() {
        let (stream, _client, _worker) = connected().await;
        let late = stream.handle(&message(300, 1, b"late"), in_ms(50)).await;
        assert!(matches!(late, Err(RpcError::DeadlineExceeded)), "{late:?}");
        // The late reply finds nobody waiting; the stream goes on.
        let Ok(Handled::Reply(reply)) = stream.handle(&message(0, 1, b"next"), in_ms(2_000)).await else {
            panic!("a reply")
        };
        assert_eq!(&reply.data[..], b"next");
        assert!(stream.inner.waiting.lock().unwrap().slots.is_empty(), "nothing left waiting");
    }

    #[tokio::test]
    async fn requests_waiting_when_the_worker_goes_get_shutdown_and_later_ones_too() {
        let (stream, _client, worker) = connected().await;
        let waiting = tokio::spawn({
            let stream = stream.clone();
            async move { stream.handle(&message(5_000, 1, b"x"), in_ms(10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        worker.abort();
        let waited = tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("answered").unwrap();
        assert!(matches!(waited, Err(RpcError::Shutdown)), "{waited:?}");
        let later = stream.handle(&message(0, 1, b"y"), in_ms(1_000)).await;
        assert!(matches!(later, Err(RpcError::Shutdown)), "{later:?}");
    }

    #[tokio::test]
    async fn a_request_due_sooner_than_those_waiting_fails_at_its_own_deadline() {
        let (stream, _client, _worker) = connected().await;
        // The worker answers each after `seq` ms.
        let patient = tokio::spawn({
            let stream = stream.clone();
            async move { stream.handle(&message(1_500, 1, b"patient"), in_ms(10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let hasty = stream.handle(&message(1_500, 3, b"hasty"), in_ms(50));
        let hasty = tokio::time::timeout(Duration::from_millis(1_000), hasty)
            .await
            .expect("failed at its deadline, before the earlier request's reply");
        assert!(matches!(hasty, Err(RpcError::DeadlineExceeded)), "{hasty:?}");
        let Ok(Handled::Reply(reply)) = patient.await.unwrap() else { panic!("the earlier one is answered") };
        assert_eq!(&reply.data[..], b"patient");
    }

    #[tokio::test]
    async fn a_reply_over_the_frame_limit_becomes_internal_and_the_connection_stays() {
        let (stream, _client, _worker) = connected().await;
        // 1 MiB of body plus its header is over the 1 MiB frame limit; 1,000 KiB is not.
        let Ok(Handled::Reply(big)) = stream.handle(&message(0, 2, &[0; 1024]), in_ms(2_000)).await else {
            panic!("a reply")
        };
        assert_eq!(big.code, Code::INTERNAL.get());
        assert!(big.reason.contains("over the cluster's frame limit"), "{}", big.reason);
        let Ok(Handled::Reply(fits)) = stream.handle(&message(0, 2, &[0; 1000]), in_ms(2_000)).await else {
            panic!("a reply")
        };
        assert_eq!((fits.code, fits.data.len()), (0, 1000 << 10));
    }

    #[tokio::test]
    async fn a_tarpc_message_over_the_frame_limit_fails_its_own_call_and_the_connection_stays() {
        let (stream, client, worker) = connected().await;
        refused_at_once(client.greet(tarpc::context::current(), "y".repeat(1 << 20)), "request of").await;
        refused_at_once(client.fill(tarpc::context::current(), 1 << 20), "reply of").await;
        let greeting = client.greet(tarpc::context::current(), "again".into()).await;
        assert_eq!(greeting.unwrap(), "hello again");
        let Ok(Handled::Reply(reply)) = stream.handle(&message(0, 1, b"relayed"), in_ms(2_000)).await else {
            panic!("a reply")
        };
        assert_eq!(&reply.data[..], b"relayed");
        assert!(!worker.is_finished(), "the connection stays open");
    }

    #[tokio::test]
    async fn requests_to_a_worker_that_does_not_read_fail_at_once_past_the_backlog() {
        // A "worker" that completes the connection and never reads it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let frames = codec::frames(TcpStream::connect(addr).await.unwrap(), 1 << 20);
        let (stream, _tarpc, driver) = RelayStream::connect::<(), ()>(frames, 256 << 10);
        tokio::spawn(driver);
        static BODY: [u8; 60 << 10] = [1; 60 << 10];
        // The socket buffers take some; then the backlog fills and requests fail before their
        // deadline instead of piling up.
        let waiting = futures::stream::FuturesUnordered::new();
        for _ in 0..2_000 {
            let sender = stream.clone();
            let mut request =
                Box::pin(async move { sender.handle(&message(0, 1, &BODY), in_ms(30_000)).await });
            match futures::poll!(request.as_mut()) {
                Poll::Pending => waiting.push(request),
                Poll::Ready(refused) => {
                    let Err(RpcError::Send(cause)) = refused else { panic!("refused: {refused:?}") };
                    assert!(cause.to_string().contains("over rpc.max_queued_bytes"), "{cause}");
                    let queued = stream.inner.outbox.buf.lock().unwrap().len();
                    assert!(queued < (256 + 61) << 10, "{queued} bytes queued");
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
        panic!("{} requests queued and none refused", waiting.len());
    }

    #[tokio::test]
    async fn dropping_every_handle_closes_the_connection() {
        let (stream, client, worker) = connected().await;
        drop((stream, client));
        tokio::time::timeout(Duration::from_secs(2), worker).await.expect("the worker saw it close").unwrap();
    }

    #[tokio::test]
    async fn a_frame_of_unknown_kind_ends_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve::<(), (), _, _>(codec::frames(socket, 1 << 20), Arc::new(Echo), |_| async {}).await;
        });
        let mut peer = TcpStream::connect(addr).await.unwrap();
        peer.write_all(&[0, 0, 0, 2, 9, 9]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), worker).await.expect("closed").unwrap();
    }
}
