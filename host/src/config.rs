//! Node configuration: one TOML file per node, every field defaulted, environment overrides.
//!
//! Sources, later ones winning: the defaults below, the TOML file (if any), then environment
//! variables `MORTAR_<SECTION>__<KEY>` (e.g. `MORTAR_GATEWAY__LISTEN=0.0.0.0:4000`). Unknown keys
//! and bad values are refused with the file, the key and the reason.

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::Path, time::Duration};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or has the wrong type.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but is out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `gateway.max_frame_bytes`.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Everything one node reads at start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's identity.
    pub node: NodeSection,
    /// The client-facing side (used by gateway and dev nodes).
    pub gateway: GatewayConfig,
    /// The module-running side (used by worker and dev nodes).
    pub worker: WorkerConfig,
    /// Metrics and health endpoints.
    pub admin: AdminConfig,
}

/// This node's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Unique id of the node within its cluster.
    pub id: String,
    /// Threads of the node's async runtime; 0 starts one per CPU core. Fewer leave cores to
    /// other processes on the machine (a load generator, a database).
    pub worker_threads: usize,
    /// Tasks a runtime thread runs before it takes one from the runtime's shared queue. Small
    /// keeps latency fair when more connections are ready at once than a thread's own queue holds
    /// (256): at 1,000 busy clients on one thread, p99 fell from 155 ms to 30 ms at 2, with no
    /// measurable cost at 100 clients (docs/benchmarks.md).
    pub global_queue_interval: u32,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { id: "dev-1".into(), worker_threads: 0, global_queue_interval: 2 }
    }
}

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
    /// Size of each connection's read buffer. Small buffers keep idle connections cheap.
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
            read_buffer_bytes: 2048,
            read_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
            local_dispatch: true,
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

/// The admin HTTP listener: `/metrics` (Prometheus), `/healthz`, `/readyz`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether to serve the admin endpoints at all.
    pub enabled: bool,
    /// Address of the admin listener. Keep it off the public internet.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 9100)) }
    }
}

/// The worker: which modules this node runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Names of the modules to enable; empty enables every module linked into the binary.
    pub modules: Vec<String>,
}

impl NodeConfig {
    /// Loads the defaults, then `file` if given, then `MORTAR_*__*` environment variables.
    ///
    /// # Errors
    /// A missing or malformed file, an unknown key, or a value out of range.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("MORTAR_").filter(|key| key.as_str().contains("__")).split("__");
        let config: NodeConfig = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges serde cannot express.
    ///
    /// # Errors
    /// The first key whose value is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
        let checks: [(&'static str, bool, &'static str); 16] = [
            ("node.id", !self.node.id.is_empty(), "must not be empty"),
            (
                "node.worker_threads",
                self.node.worker_threads <= 1024,
                "must be at most 1024 (0: one per core)",
            ),
            ("node.global_queue_interval", self.node.global_queue_interval >= 1, "must be at least 1"),
            ("gateway.write_timeout_ms", g.write_timeout_ms >= 1, "must be at least 1"),
            ("gateway.request_timeout_ms", g.request_timeout_ms >= 1, "must be at least 1"),
            ("gateway.max_frame_bytes", g.max_frame_bytes >= 64, "must be at least 64"),
            ("gateway.max_route_bytes", g.max_route_bytes >= 3, "must be at least 3"),
            ("gateway.max_in_flight", g.max_in_flight >= 1, "must be at least 1"),
            ("gateway.session_concurrency", g.session_concurrency >= 1, "must be at least 1"),
            ("gateway.rate_burst", g.rate_per_sec == 0 || g.rate_burst >= 1, "must be at least 1"),
            ("gateway.max_connections", g.max_connections >= 1, "must be at least 1"),
            ("gateway.max_handshakes", g.max_handshakes >= 1, "must be at least 1"),
            ("gateway.outbound_queue", g.outbound_queue >= 1, "must be at least 1"),
            ("gateway.read_buffer_bytes", g.read_buffer_bytes >= 512, "must be at least 512"),
            ("gateway.read_timeout_ms", g.read_timeout_ms >= 100, "must be at least 100"),
            ("gateway.handshake_timeout_ms", g.handshake_timeout_ms >= 100, "must be at least 100"),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err(ConfigError::Invalid { key, reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file in the temp dir, removed on drop.
    struct TempConf(std::path::PathBuf);

    impl Drop for TempConf {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write_conf(text: &str) -> TempConf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mortar-conf-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempConf(path)
    }

    #[test]
    fn defaults_need_no_file() {
        let config = NodeConfig::load(None).unwrap();
        assert_eq!(config.gateway.listen.port(), 4000);
        assert!(config.worker.modules.is_empty());
    }

    #[test]
    fn file_overrides_defaults() {
        let conf = write_conf(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nsession_concurrency = 4\n[worker]\nmodules = [\"echo\"]\n",
        );
        let config = NodeConfig::load(Some(&conf.0)).unwrap();
        assert_eq!(config.gateway.listen.port(), 0);
        assert_eq!(config.gateway.session_concurrency, 4);
        assert_eq!(config.worker.modules, ["echo"]);
    }

    #[test]
    fn unknown_key_is_refused_with_file_and_key() {
        let conf = write_conf("[gateway]\nmax_frame = 10\n");
        let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
        assert!(error.contains("max_frame"), "{error}");
        assert!(error.contains(&conf.0.display().to_string()), "{error}");
    }

    #[test]
    fn bad_value_is_refused_with_key() {
        let conf = write_conf("[gateway]\nmax_in_flight = 0\n");
        let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
        assert_eq!(error, "config key `gateway.max_in_flight`: must be at least 1");
        let conf = write_conf("[gateway]\nlisten = \"nowhere\"\n");
        let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
    }

    #[test]
    fn shipped_dev_config_states_the_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/dev.toml");
        let config = NodeConfig::load(Some(&shipped)).unwrap();
        let defaults = NodeConfig::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = NodeConfig::load(Some(Path::new("/nonexistent/mortar.toml"))).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/mortar.toml"), "{error}");
    }
}
