//! Accepting connections from peer nodes: a connection cap, the handshake, then the service.
//!
//! [`serve`] returns when its `stop` completes; until then, for each connection:
//! 1. over `rpc.max_connections` open at once, or `rpc.max_handshakes` in their handshake, it is
//!    closed at once (counted, logged);
//! 2. a failed handshake closes it (see [`handshake::accept`]: its first frame is at most
//!    `rpc.max_handshake_bytes`, within `rpc.handshake_timeout_ms`);
//! 3. otherwise `serve_peer` runs on it until the peer hangs up.
//!
//! When `stop` completes the listener closes and the open connections are handed back to the
//! caller, which cuts them by dropping the set (a worker first lets them drain).

use super::{
    codec::Frames,
    handshake::{self, Hello, Identity},
};
use crate::config::RpcConfig;
use crate::registry::NodeKind;
use mortar_telemetry::metrics as m;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};

/// Serves peers of the kinds `peer_kinds` on `listener` until `stop` completes (see the module docs).
/// `serve_peer` gets the peer's hello and the connection after its handshake. Returns the
/// connections still open; dropping the set cuts them.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    peer_kinds: &'static [NodeKind],
    me: Arc<Identity>,
    config: RpcConfig,
    stop: impl Future<Output = ()>,
    serve_peer: F,
) -> JoinSet<()>
where
    F: Fn(Hello, Frames) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes));
    let config = Arc::new(config);
    let serve_peer = Arc::new(serve_peer);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::error!(%error, "accepting a peer connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics::counter!(m::RPC_REFUSED, "reason" => "too many connections").increment(1);
                    if let Some(held) = handshake::STRANGERS_LOGGED.allow() {
                        tracing::warn!(%peer, limit = config.max_connections, not_logged_since = held, "peer connection refused: rpc.max_connections reached");
                    }
                    continue;
                };
                let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                    metrics::counter!(m::RPC_REFUSED, "reason" => "too many handshakes").increment(1);
                    if let Some(held) = handshake::STRANGERS_LOGGED.allow() {
                        tracing::warn!(%peer, limit = config.max_handshakes, not_logged_since = held, "peer connection refused: rpc.max_handshakes reached");
                    }
                    continue;
                };
                let (me, config, serve_peer) = (me.clone(), config.clone(), serve_peer.clone());
                // The handshake runs on the connection's own task, so a slow peer holds up no other.
                connections.spawn(async move {
                    let _slot = slot;
                    let accepted = handshake::accept(stream, peer, peer_kinds, &me, &config).await;
                    drop(handshake);
                    if let Some((hello, frames)) = accepted {
                        serve_peer(hello, frames).await;
                    }
                });
            }
        }
    }
    connections
}
