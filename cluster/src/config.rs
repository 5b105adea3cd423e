//! The sections of the cluster layer: `[cluster]`, `[registry]` and `[rpc]`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The cluster this node belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name: nodes of different clusters sharing one Redis never see each other.
    /// Lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// Shared by every node of the cluster: a peer whose handshake carries another secret is
    /// refused. Required by gateway and worker nodes; set it from the environment
    /// (`MORTAR_CLUSTER__SECRET`) rather than in a file.
    pub secret: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { name: "mortar".into(), secret: String::new() }
    }
}

/// How nodes find each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `static` (the nodes listed in `registry.nodes`) or `redis://HOST:PORT[/DB]`. `mortar dev`
    /// ignores it and keeps an in-process registry.
    pub url: String,
    /// The cluster's nodes, for the static registry: a gateway lists its workers here.
    pub nodes: Vec<StaticNode>,
    /// Redis: a node that stops refreshing its entry (dead, frozen, cut off) drops out after
    /// this long.
    pub ttl_ms: u64,
    /// Redis: how often a node refreshes its entry; well under `ttl_ms`.
    pub heartbeat_ms: u64,
    /// Redis: how often the full node list is read again, so a missed change notice heals.
    pub resync_ms: u64,
    /// Redis: deadline of each registry command; past it the node serves from its last snapshot.
    pub timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "static".into(),
            nodes: Vec::new(),
            ttl_ms: 3_000,
            heartbeat_ms: 1_000,
            resync_ms: 2_000,
            timeout_ms: 1_000,
        }
    }
}

impl RegistryConfig {
    /// [`RegistryConfig::ttl_ms`] as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// [`RegistryConfig::heartbeat_ms`] as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// [`RegistryConfig::resync_ms`] as a duration.
    pub fn resync(&self) -> Duration {
        Duration::from_millis(self.resync_ms)
    }

    /// [`RegistryConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One node of a static registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    /// The node's id; its handshake must say the same.
    pub id: String,
    /// `worker` or `gateway`.
    #[serde(default = "worker_kind")]
    pub kind: String,
    /// Its RPC address, `HOST:PORT`.
    pub addr: String,
}

fn worker_kind() -> String {
    "worker".into()
}

/// RPC between nodes: connections, deadlines, liveness checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Deadline of a TCP connect to a peer.
    pub connect_timeout_ms: u64,
    /// Deadline of the handshake on a new connection (both sides): a peer that does not
    /// complete it in time (frozen, or not a mortar node) is dropped.
    pub handshake_timeout_ms: u64,
    /// First wait before reconnecting to a peer; doubles on every failure up to
    /// `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest wait between reconnect attempts.
    pub backoff_max_ms: u64,
    /// How often a gateway pings each connected worker.
    pub ping_interval_ms: u64,
    /// A ping unanswered this long marks the worker down (frozen or overloaded): new requests
    /// go elsewhere; requests already sent keep their own deadlines.
    pub ping_timeout_ms: u64,
    /// Largest RPC frame either side accepts; a larger one closes the connection. A worker
    /// whose reply would be larger sends `INTERNAL` instead.
    pub max_frame_bytes: usize,
    /// A gateway's requests to a worker that wait unsent (the worker does not read: frozen, or
    /// far behind) at most: beyond, requests to it fail at once with `UNAVAILABLE` and it is
    /// marked down, instead of piling up in memory.
    pub max_queued_bytes: usize,
    /// Peer connections a node accepts at once; more are closed at once.
    pub max_connections: usize,
    /// Largest frame a connection may send before its handshake is accepted (the hello, with
    /// the nodes its sender knows); a larger one closes it. Until the cluster secret is checked
    /// a peer is a stranger: this, `max_handshakes` and `handshake_timeout_ms` bound what
    /// strangers can hold.
    pub max_handshake_bytes: usize,
    /// Connections in their handshake at once (counted within `max_connections`); more are
    /// closed at once.
    pub max_handshakes: usize,
    /// A worker dials another worker only when one of its modules calls a module there, and
    /// closes that connection after this long without a call. (Gateways keep every worker
    /// connected: every client request needs one.)
    pub peer_idle_ms: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 1_000,
            backoff_min_ms: 100,
            backoff_max_ms: 2_000,
            ping_interval_ms: 500,
            ping_timeout_ms: 1_000,
            max_frame_bytes: 16 << 20,
            max_queued_bytes: 64 << 20,
            max_connections: 1_024,
            max_handshake_bytes: 64 << 10,
            max_handshakes: 64,
            peer_idle_ms: 30_000,
        }
    }
}

impl RpcConfig {
    /// [`RpcConfig::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`RpcConfig::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// [`RpcConfig::backoff_min_ms`] as a duration.
    pub fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.backoff_min_ms)
    }

    /// [`RpcConfig::backoff_max_ms`] as a duration.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    /// [`RpcConfig::ping_interval_ms`] as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// [`RpcConfig::ping_timeout_ms`] as a duration.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// [`RpcConfig::peer_idle_ms`] as a duration.
    pub fn peer_idle(&self) -> Duration {
        Duration::from_millis(self.peer_idle_ms)
    }
}
