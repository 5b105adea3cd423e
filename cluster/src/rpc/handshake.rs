//! The first exchange on every connection between nodes, before any RPC.
//!
//! The dialling node sends one frame, a [`Hello`] with the cluster's name and secret, its own
//! registry entry (so a worker learns where a gateway's push service listens from the gateway
//! itself), the nodes it knows (so workers of a static cluster learn each other from the gateway
//! that dials them all) and where its cluster keeps players' sessions; the listening node answers
//! one frame, [`Welcome::Accepted`] with its own registry entry (so a gateway learns what a worker
//! serves from the worker itself), or [`Welcome::Refused`] with the reason, and closes. A peer
//! that sends anything else, or nothing within `rpc.handshake_timeout_ms`, is dropped and logged.
//! A peer whose sessions live elsewhere (another `session.url`) is refused: pushes and kicks
//! between the two would be lost. The secret travels in the clear: keep RPC ports on a private
//! network (docs/cluster.md).

use super::codec::{self, Frames};
use crate::config::RpcConfig;
use crate::registry::{NodeEntry, NodeKind};
use futures::{SinkExt as _, StreamExt as _};
use mortar_telemetry::log_limit::LogLimit;
use mortar_telemetry::metrics as m;
use serde::{Deserialize, Serialize};
use std::{io, net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// The version of the node-to-node protocol; a peer speaking another is refused. Bumped whenever
/// a message changes shape (2: a worker's `Reply` carries a `reason`; a hello carries the
/// dialler's entry, the nodes it knows and where its sessions live; 3: a worker connection carries
/// the relay stream beside tarpc, see [`stream`](super::stream); 4: the relay stream's headers
/// have a fixed layout instead of postcard's), so nodes of two builds refuse each other at the
/// handshake instead of misreading each other's frames.
pub const PROTOCOL: u32 = 4;

/// What a dialling node says first.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's secret.
    pub secret: String,
    /// The dialling node's registry entry.
    pub entry: NodeEntry,
    /// The nodes the dialling node knows (its registry's view).
    pub known: Vec<NodeEntry>,
}

/// The listening node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// Go ahead; this is who you reached.
    Accepted(Box<NodeEntry>),
    /// Refused, and why; the connection closes.
    Refused(String),
}

/// Who this node is, as it introduces itself on connections.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's secret.
    pub secret: String,
    /// This node's registry entry.
    pub entry: NodeEntry,
}

/// Why a connection to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// No TCP connection within the connect timeout, or it failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer did not complete the handshake in time, or broke it.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer refused this node.
    #[error("{addr} refused this node: {reason}")]
    Refused {
        /// The address dialled.
        addr: String,
        /// The peer's reason.
        reason: String,
    },
    /// Another node than the one expected answers at that address.
    #[error("{addr} is node `{found}`, not `{expected}`")]
    WrongNode {
        /// The address dialled.
        addr: String,
        /// The id expected there.
        expected: String,
        /// The id that answered.
        found: String,
    },
}

/// Connects to node `expected` at `addr` and introduces this node, with the nodes it knows.
///
/// # Errors
/// See [`DialError`]; every step is bounded by the connect or handshake timeout.
pub async fn dial(
    addr: &str,
    expected: &str,
    me: &Identity,
    known: Vec<NodeEntry>,
    config: &RpcConfig,
) -> Result<(NodeEntry, Frames), DialError> {
    let connect_error = |reason: String| DialError::Connect { addr: addr.to_owned(), reason };
    let stream = tokio::time::timeout(config.connect_timeout(), TcpStream::connect(addr))
        .await
        .map_err(|_| connect_error(format!("no answer within {} ms", config.connect_timeout_ms)))?
        .map_err(|error| connect_error(error.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut frames = codec::frames(stream, config.max_handshake_bytes);
    let mut hello = Hello {
        protocol: PROTOCOL,
        cluster: me.cluster.clone(),
        secret: me.secret.clone(),
        entry: me.entry.clone(),
        known,
    };
    // The peer reads at most `rpc.max_handshake_bytes` before it knows this node: the nodes it
    // is told of are a hint (the registry has them all), so the hello leaves out what does not fit.
    let known = std::mem::take(&mut hello.known);
    // postcard writes a list as its length (a varint, at most 5 bytes) and then its items.
    let mut room = config.max_handshake_bytes.saturating_sub(encoded_len(&hello).saturating_add(5));
    for entry in known {
        let len = encoded_len(&entry);
        if len > room {
            break;
        }
        room -= len;
        hello.known.push(entry);
    }
    let handshake_error = |reason: String| DialError::Handshake { addr: addr.to_owned(), reason };
    let exchange = async {
        frames.send(codec::encode(&hello)?).await?;
        let frame = frames.next().await.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))??;
        codec::decode::<Welcome>(&frame)
    };
    let welcome = tokio::time::timeout(config.handshake_timeout(), exchange)
        .await
        .map_err(|_| handshake_error(format!("no answer within {} ms", config.handshake_timeout_ms)))?
        .map_err(|error| handshake_error(error.to_string()))?;
    match welcome {
        Welcome::Accepted(entry) if entry.id == expected => {
            frames.codec_mut().set_max_frame_length(config.max_frame_bytes);
            Ok((*entry, frames))
        }
        Welcome::Accepted(entry) => Err(DialError::WrongNode {
            addr: addr.to_owned(),
            expected: expected.to_owned(),
            found: entry.id,
        }),
        Welcome::Refused(reason) => Err(DialError::Refused { addr: addr.to_owned(), reason }),
    }
}

/// Takes the handshake of a connection a peer of one of `peer_kinds` opened; answers with this
/// node's entry, or refuses it (and logs why).
///
/// Returns the peer's hello and the connection, or `None` when it was refused or broke off.
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    peer_kinds: &[NodeKind],
    me: &Identity,
    config: &RpcConfig,
) -> Option<(Hello, Frames)> {
    let _ = stream.set_nodelay(true);
    let mut frames = codec::frames(stream, config.max_handshake_bytes);
    let first = tokio::time::timeout(config.handshake_timeout(), frames.next()).await;
    let hello = match first {
        Ok(Some(Ok(frame))) => codec::decode::<Hello>(&frame).ok(),
        _ => None,
    };
    // The metric's label, and the reason logged and sent.
    let verdict: Result<(), (&'static str, String)> = match &hello {
        None => Err(("not a handshake", "the first frame is not a mortar handshake".into())),
        Some(hello) if hello.protocol != PROTOCOL => Err((
            "protocol version differs",
            format!(
                "node-to-node protocol {} differs from this node's {PROTOCOL}: run one mortar version",
                hello.protocol
            ),
        )),
        Some(hello) if hello.cluster != me.cluster => Err(("another cluster", "another cluster".into())),
        Some(hello) if !same_secret(hello.secret.as_bytes(), me.secret.as_bytes()) => {
            Err(("wrong cluster secret", "wrong cluster secret".into()))
        }
        Some(hello) if !peer_kinds.contains(&hello.entry.kind) => {
            Err(("wrong kind of node", "this service is not for that kind of node".into()))
        }
        Some(hello) if hello.entry.sessions != me.entry.sessions => {
            Err(("session.url differs", me.entry.sessions_differ_from(&hello.entry).unwrap_or_default()))
        }
        Some(_) => Ok(()),
    };
    let claimed = hello.as_ref().map_or("?", |hello| hello.entry.id.as_str()).to_owned();
    match (verdict, hello) {
        (Ok(()), Some(hello)) => {
            let welcome = codec::encode(&Welcome::Accepted(Box::new(me.entry.clone()))).ok()?;
            tokio::time::timeout(config.handshake_timeout(), frames.send(welcome)).await.ok()?.ok()?;
            frames.codec_mut().set_max_frame_length(config.max_frame_bytes);
            tracing::debug!(node = %me.entry.id, %peer, peer_node = claimed, "peer connected");
            Some((hello, frames))
        }
        (verdict, hello) => {
            let (label, reason) = verdict
                .err()
                .unwrap_or(("not a handshake", "the first frame is not a mortar handshake".into()));
            metrics::counter!(m::RPC_REFUSED, "reason" => label).increment(1);
            if label == "session.url differs" {
                tracing::error!(node = %me.entry.id, %peer, peer_node = claimed, reason, "peer refused");
            } else if let Some(held) = STRANGERS_LOGGED.allow() {
                // Anyone who reaches the port causes these: one line per second at most.
                tracing::warn!(node = %me.entry.id, %peer, peer_node = claimed, reason, not_logged_since = held, "peer refused");
            }
            if hello.is_some() {
                let refusal = codec::encode(&Welcome::Refused(reason)).ok()?;
                let _ = tokio::time::timeout(config.handshake_timeout(), frames.send(refusal)).await;
            }
            None
        }
    }
}

/// The length of `value`'s frame.
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    codec::encode(value).map_or(usize::MAX, |frame| frame.len())
}

/// Refusals of strangers logged (see [`mortar_telemetry::log_limit`]).
pub(super) static STRANGERS_LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Compares secrets in time that depends on their length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_by_every_byte() {
        assert!(super::same_secret(b"s3cret", b"s3cret"));
        assert!(!super::same_secret(b"s3cret", b"s3creT"));
        assert!(!super::same_secret(b"s3cret", b"s3cre"));
    }
}
