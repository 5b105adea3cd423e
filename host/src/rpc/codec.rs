//! The serde format of RPC frames: postcard.
//!
//! tarpc's ready-made formats are bincode 1.3 (no longer developed) and JSON (which writes every
//! `Bytes` body as an array of numbers). postcard is maintained, compact (varints, bytes as
//! length + raw) and fast; docs/cluster.md has the measurement that chose it.

use bytes::{Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::{io, marker::PhantomData, pin::Pin};
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
    tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, Postcard<Item, SinkItem>>;

/// The tarpc transport over `frames`, for either side of a service.
pub fn transport<Item, SinkItem>(frames: Frames) -> Transport<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    tarpc::serde_transport::new(frames, Postcard::default())
}

/// Frames on `stream`, refusing any longer than `max_frame_bytes`.
pub fn frames(stream: TcpStream, max_frame_bytes: usize) -> Frames {
    Framed::new(stream, LengthDelimitedCodec::builder().max_frame_length(max_frame_bytes).new_codec())
}

/// Encodes one frame.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Bytes, io::Error> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Decodes one frame.
pub(super) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, io::Error> {
    postcard::from_bytes(frame).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}
