//! Node lifecycle: what each kind of node starts, and in which order it stops.
//!
//! - [`dev`]: gateway and worker in one process over tarpc's in-process transport.

pub mod dev;

use crate::worker::{StartError, routes::RouteError};
use tokio::net::TcpListener;

/// The sockets a node serves on, bound by the caller (so port 0 and readiness lines work).
pub struct Listeners {
    /// WebSocket clients.
    pub gateway: TcpListener,
    /// The admin endpoints (`/metrics`, `/healthz`, `/readyz`); none to serve no admin endpoints.
    pub admin: Option<TcpListener>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The route table could not be built (duplicate route, unknown module, …).
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// A module's `on_start` failed.
    #[error(transparent)]
    Start(#[from] StartError),
}
