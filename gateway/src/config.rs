//! The `[gateway]` section: the client-facing side and the limits on what clients may do.

use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

/// The gateway: WebSocket clients and the limits on what they may do. Every limit is described in
/// `docs/limits.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the WebSocket listener binds; clients connect to `ws://LISTEN/ws`.
    pub listen: SocketAddr,
    /// Largest WebSocket message a client may send; a larger one closes the connection (1009)
    /// before it is buffered.
    pub max_frame_bytes: usize,
    /// Longest route (`main_type` plus `sub_type`, in bytes); a longer one is answered
    /// `BAD_REQUEST`.
    pub max_route_bytes: usize,
    /// Requests of one session read but not yet answered; further requests are answered
    /// `RATE_LIMITED` at once.
    pub max_in_flight: usize,
    /// Requests of one session handled at the same time. Replies always come back in request
    /// order; 1 also makes handlers of one session run one after another. With
    /// `local_dispatch` a session's handlers share its task: they interleave at `.await`s but do
    /// not run on two threads at once.
    pub session_concurrency: usize,
    /// Requests per second one session may send on average (token bucket); 0 turns the limit off.
    /// Requests over it are answered `RATE_LIMITED`.
    pub rate_per_sec: u32,
    /// Requests one session may send in a burst above `rate_per_sec`.
    pub rate_burst: u32,
    /// Client connections open at once; further upgrades are refused with HTTP 503.
    pub max_connections: usize,
    /// Client connections from one IP address at once; further upgrades are refused with HTTP
    /// 429. 0 turns the limit off.
    pub max_connections_per_ip: usize,
    /// TCP connections still in the WebSocket handshake at once; further ones are closed at once.
    pub max_handshakes: usize,
    /// Frames queued for one client: its replies, and separately its pushes. While the replies'
    /// queue is full the gateway reads nothing more from that client; a push that finds the
    /// pushes' queue full is dropped for that client (and counted).
    pub outbound_queue: usize,
    /// A client whose outgoing queue stays full this long (it does not read) is disconnected.
    pub write_timeout_ms: u64,
    /// 0: a push is written as soon as it reaches the session. Above: a push that finds nothing
    /// else to write is held up to this long, and the pushes gathered meanwhile leave in one
    /// write with it (as Pomelo's buffered push scheduler does, its `flushInterval`); a reply
    /// never waits and takes the held pushes along. Fewer, larger writes for clients that get
    /// many pushes, at the cost of that much latency on a push.
    pub push_flush_ms: u64,
    /// Bytes a connection's read buffer grows by when it is full (a frame larger than this gets
    /// room for the whole frame). Allocated when the client first sends: idle connections hold
    /// none.
    pub read_buffer_bytes: usize,
    /// A connection that sends nothing (no frame, no ping) for this long is closed (1000).
    pub read_timeout_ms: u64,
    /// A TCP connection that has not completed the WebSocket upgrade by then is closed.
    pub handshake_timeout_ms: u64,
    /// Deadline of each relayed request; past it the client gets `TIMEOUT`.
    pub request_timeout_ms: u64,
    /// On shutdown, how long sessions get to finish their in-flight requests.
    pub shutdown_grace_ms: u64,
    /// When this node also runs the worker (`mortar dev`), run its handlers in-process on the
    /// session's task. `false` relays them through the worker's tarpc service over an in-process
    /// channel instead: the code path of a remote worker, slower by several task hand-offs per
    /// request; meant for testing that path.
    pub local_dispatch: bool,
    /// Whether `sys.descriptors` answers with the protos of the routes served behind this
    /// gateway (like gRPC server reflection), so clients encode JSON for modules they were not
    /// built with. Off answers `NO_ROUTE`.
    pub serve_descriptors: bool,
    /// Address of the gateway's own RPC service, which workers call to push to its sessions and
    /// to kick them (cluster gateways only; `mortar dev` has none).
    pub rpc_listen: SocketAddr,
    /// The address workers dial for that service, as registered; empty: the bound address
    /// (set it when `rpc_listen` binds 0.0.0.0 or sits behind NAT).
    pub rpc_advertise: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_frame_bytes: 64 * 1024,
            max_route_bytes: 64,
            max_in_flight: 128,
            session_concurrency: 1,
            rate_per_sec: 100,
            rate_burst: 200,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            max_handshakes: 1_000,
            outbound_queue: 256,
            write_timeout_ms: 5_000,
            push_flush_ms: 0,
            read_buffer_bytes: 2048,
            read_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            local_dispatch: true,
            serve_descriptors: true,
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            rpc_advertise: String::new(),
        }
    }
}

impl GatewayConfig {
    /// [`GatewayConfig::read_timeout_ms`] as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// [`GatewayConfig::write_timeout_ms`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// [`GatewayConfig::push_flush_ms`] as a duration; `None` when pushes are not held.
    pub fn push_flush(&self) -> Option<Duration> {
        (self.push_flush_ms > 0).then(|| Duration::from_millis(self.push_flush_ms))
    }

    /// [`GatewayConfig::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// [`GatewayConfig::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`GatewayConfig::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
