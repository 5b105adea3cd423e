//! The gateway: accepts WebSocket clients and relays their requests to workers.
//!
//! Layout:
//! - this file: [`Gateway`] and [`serve`], the accept loop with its shutdown.
//! - [`agent`]: one task pair per connection (reader relays requests, writer sends frames).
//! - [`relay`]: the tarpc client to a worker, with deadlines.

mod agent;
pub mod relay;

use crate::config::GatewayConfig;
use relay::Relay;
use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{
    handshake::server::{ErrorResponse, Request, Response},
    http::StatusCode,
    protocol::WebSocketConfig,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The path clients connect to.
pub const WS_PATH: &str = "/ws";

/// A gateway: its config, its identity and its way to the workers.
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    config: GatewayConfig,
    node_id: String,
    relay: Relay,
    next_session: AtomicU64,
}

impl Gateway {
    /// A gateway named `node_id` relaying client requests through `relay`.
    pub fn new(config: GatewayConfig, node_id: String, relay: Relay) -> Self {
        let shared = Shared {
            config,
            node_id,
            relay,
            next_session: AtomicU64::new(1),
        };
        Self {
            shared: Arc::new(shared),
        }
    }
}

/// Accepts clients on `listener` and serves them until `shutdown` completes.
///
/// Stops when `shutdown` completes: it stops accepting, tells every session to finish its
/// in-flight requests, push `sys.kick` (`SERVER_SHUTDOWN`) and close, and returns once all
/// sessions have ended or the configured grace period has passed.
pub async fn serve(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let shared = gateway.shared;
    let stop = CancellationToken::new();
    let sessions = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.spawn(connection(shared.clone(), stream, peer, stop.clone()));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    sessions.close();
    stop.cancel();
    let grace = shared.config.shutdown_grace();
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(
            remaining = sessions.len(),
            "sessions still open after the shutdown grace period"
        );
    }
}

/// Upgrades one TCP connection to a WebSocket (within the handshake timeout) and runs its agent.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let config = &shared.config;
    let _ = stream.set_nodelay(true);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_bytes)
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config));
    let ws = tokio::select! {
        () = stop.cancelled() => return,
        upgraded = tokio::time::timeout(config.handshake_timeout(), handshake) => match upgraded {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "websocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "websocket handshake timed out");
                return;
            }
        },
    };
    let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, session, "session opened");
    agent::run(shared.clone(), ws, session, peer.ip(), stop).await;
    tracing::debug!(%peer, session, "session closed");
}

/// Accepts the upgrade only on [`WS_PATH`].
#[allow(clippy::result_large_err)] // the signature tungstenite asks for
fn check_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() == WS_PATH {
        return Ok(response);
    }
    let mut refusal = ErrorResponse::new(Some(format!(
        "mortar serves WebSocket clients at {WS_PATH}\n"
    )));
    *refusal.status_mut() = StatusCode::NOT_FOUND;
    Err(refusal)
}
