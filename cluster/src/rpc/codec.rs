//! The serde format of RPC frames: postcard.
//!
//! tarpc's ready-made formats are bincode 1.3 (no longer developed) and JSON (which writes every
//! `Bytes` body as an array of numbers). postcard is maintained, compact (varints, bytes as
//! length + raw) and fast; docs/cluster.md has the measurement that chose it.

use bytes::{Bytes, BytesMut};
use futures::{Sink, Stream};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    io,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};
use tarpc::tokio_serde::{Deserializer, Serializer};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Encodes `SinkItem`s and decodes `Item`s with postcard.
pub struct Postcard<Item, SinkItem>(PhantomData<Directions<Item, SinkItem>>);

/// Items come out, sink items go in: the codec owns neither (and is `Send` whatever they are).
type Directions<Item, SinkItem> = (fn() -> Item, fn(SinkItem));

impl<Item, SinkItem> Default for Postcard<Item, SinkItem> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Item, SinkItem: Serialize> Serializer<SinkItem> for Postcard<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        encode(item)
    }
}

impl<Item: DeserializeOwned, SinkItem> Deserializer<Item> for Postcard<Item, SinkItem> {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        decode(src)
    }
}

/// A TCP connection after the handshake: length-delimited frames.
pub type Frames = Framed<TcpStream, LengthDelimitedCodec>;

/// A tarpc transport over a connection's frames.
pub type Transport<Item, SinkItem> =
    Coalesce<tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, Postcard<Item, SinkItem>>>;

/// The tarpc transport over `frames`, for either side of a service.
pub fn transport<Item, SinkItem>(frames: Frames) -> Transport<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    Coalesce { inner: tarpc::serde_transport::new(frames, Postcard::default()), dirty: false, yielded: false }
}

/// A transport whose flush first lets the other ready tasks run once, so the messages they
/// produce in that round leave in the same write.
///
/// tarpc flushes as soon as it has nothing more to send right now. With one task per request,
/// that was one `writev` per message on both sides (0.8 per request on the gateway, 0.94 on the
/// worker, measured at 44k req/s): the kernel's loopback path on each write then cost more than
/// everything else the gateway does. Yielding once per flush batches what became ready in the
/// same scheduler round; a message waits for at most that round.
pub struct Coalesce<T> {
    inner: T,
    /// Something was sent since the last flush.
    dirty: bool,
    /// This flush has yielded once already.
    yielded: bool,
}

impl<T: Stream + Unpin> Stream for Coalesce<T> {
    type Item = T::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<I, T: Sink<I> + Unpin> Sink<I> for Coalesce<T> {
    type Error = T::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: I) -> Result<(), T::Error> {
        self.dirty = true;
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        if self.dirty && !self.yielded {
            // Tokio runs a task that woke itself after the tasks already waiting.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.dirty = false;
            self.yielded = false;
        }
        flushed
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Frames on `stream`, refusing any longer than `max_frame_bytes`.
pub fn frames(stream: TcpStream, max_frame_bytes: usize) -> Frames {
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(max_frame_bytes).new_codec())
}

/// Encodes one frame. Starting with room for a typical relayed request saves the buffer's
/// regrowth: a quarter of the encoding time measured (docs/cluster.md).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Bytes, io::Error> {
    postcard::to_extend(value, Vec::with_capacity(256))
        .map(Bytes::from)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Decodes one frame.
pub(super) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, io::Error> {
    postcard::from_bytes(frame).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}
