//! Node configuration: one TOML file per node, every field defaulted, environment overrides.
//!
//! Sources, later ones winning: the defaults below, the TOML file (if any), then environment
//! variables `MORTAR_<SECTION>__<KEY>` (e.g. `MORTAR_GATEWAY__LISTEN=0.0.0.0:4000`). Unknown keys
//! and bad values are refused with the file, the key and the reason.

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
pub use mortar_backends::config::{CacheConfig, SessionConfig, StorageConfig};
pub use mortar_cluster::config::{ClusterConfig, RegistryConfig, RpcConfig, StaticNode};
pub use mortar_gateway::config::GatewayConfig;
pub use mortar_runtime::config::{TablesConfig, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::{fmt::Display, net::SocketAddr, path::Path, time::Duration};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or has the wrong type.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but is out of range.
    #[error("config key `{key}`{origin}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `gateway.max_frame_bytes`.
        key: &'static str,
        /// Where the value came from (` in FILE`, ` from MORTAR_…`), empty for a default.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything one node reads at start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's identity.
    pub node: NodeSection,
    /// The cluster it belongs to (gateway and worker nodes).
    pub cluster: ClusterConfig,
    /// The client-facing side (used by gateway and dev nodes).
    pub gateway: GatewayConfig,
    /// The module-running side (used by worker and dev nodes).
    pub worker: WorkerConfig,
    /// How nodes find each other (gateway and worker nodes).
    pub registry: RegistryConfig,
    /// RPC between nodes (gateway and worker nodes).
    pub rpc: RpcConfig,
    /// Where modules' documents are kept (worker and dev nodes).
    pub storage: StorageConfig,
    /// Where modules' cache entries are kept (worker and dev nodes).
    pub cache: CacheConfig,
    /// Where logged-in players' locations are kept (every node).
    pub session: SessionConfig,
    /// Where game config tables are read from (worker and dev nodes).
    pub tables: TablesConfig,
    /// The modules' own sections, `[modules.<name>]`, each checked by the module that reads it
    /// (worker and dev nodes); a section no loaded module reads stops the start.
    pub modules: std::collections::BTreeMap<String, serde_json::Value>,
    /// Metrics and health endpoints.
    pub admin: AdminConfig,
    /// The file it was read from, for error messages that point at a line of it.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

/// This node's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Unique id of the node within its cluster: 1–64 characters of `[A-Za-z0-9._-]`.
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

/// The admin HTTP listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, and on worker and
/// dev nodes the admin API under `/v1/` once `token` is set (docs/operations.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether to serve the admin endpoints at all.
    pub enabled: bool,
    /// Address of the admin listener. Keep it off the public internet.
    pub listen: SocketAddr,
    /// Admin connections open at once; more are closed at once, so scrapers and stray clients
    /// can never use up the descriptors the gateway needs for players.
    pub max_connections: usize,
    /// A connection that has not sent its whole request by then is closed; an admin API call
    /// gets this long to complete (`TIMEOUT` past it).
    pub request_timeout_ms: u64,
    /// The bearer token of the admin API (`Authorization: Bearer TOKEN`); empty, the default:
    /// the API is off. Set it from the environment (`MORTAR_ADMIN__TOKEN`) rather than a file.
    pub token: String,
    /// The largest admin API request body, in bytes; a larger one is refused (413).
    pub max_body_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            max_connections: 64,
            request_timeout_ms: 5_000,
            token: String::new(),
            max_body_bytes: 1 << 20,
        }
    }
}

impl AdminConfig {
    /// [`AdminConfig::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// An hour, the longest any timeout may be.
const HOUR_MS: u64 = 3_600_000;

impl NodeConfig {
    /// Loads the defaults, then `file` if given, then `MORTAR_*__*` environment variables.
    ///
    /// # Errors
    /// A missing or malformed file, an unknown key, or a value out of range; a value out of range
    /// is reported with where it came from (the file, or the environment variable).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        for warning in stray_env_vars(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok())) {
            tracing::warn!("{warning}");
        }
        let env = Env::prefixed("MORTAR_").filter(|key| key.as_str().contains("__")).split("__");
        let figment = figment.merge(env);
        let mut config: NodeConfig = figment.extract().map_err(Box::new)?;
        config.source = file.map(Path::to_owned);
        config.validate().map_err(|error| match error {
            ConfigError::Invalid { key, reason, .. } => {
                ConfigError::Invalid { key, origin: origin(&figment, key), reason }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks the ranges serde cannot express. Every number has bounds: past them a value would
    /// exhaust memory, overflow a timer or a channel, or make no sense.
    ///
    /// # Errors
    /// The first key whose value is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (n, g, w, r, rpc, a) =
            (&self.node, &self.gateway, &self.worker, &self.registry, &self.rpc, &self.admin);
        check("node.id", is_name(&n.id, true), "must be 1-64 characters of A-Z a-z 0-9 . _ -")?;
        within("node.worker_threads", n.worker_threads, 0, 1024)?;
        within("node.global_queue_interval", n.global_queue_interval, 1, 1024)?;
        check("cluster.name", is_name(&self.cluster.name, false), "must be 1-64 characters of a-z 0-9 _ -")?;
        check("cluster.secret", self.cluster.secret.len() <= 1024, "must be at most 1024 bytes")?;

        within("gateway.max_frame_bytes", g.max_frame_bytes, 64, 16 << 20)?;
        within("gateway.max_route_bytes", g.max_route_bytes, 3, 1024)?;
        within("gateway.max_in_flight", g.max_in_flight, 1, 65_536)?;
        within("gateway.session_concurrency", g.session_concurrency, 1, g.max_in_flight.min(1024))?;
        within("gateway.rate_per_sec", g.rate_per_sec, 0, 1_000_000)?;
        if g.rate_per_sec > 0 {
            within("gateway.rate_burst", g.rate_burst, 1, 1_000_000)?;
        }
        within("gateway.max_connections", g.max_connections, 1, 10_000_000)?;
        within("gateway.max_connections_per_ip", g.max_connections_per_ip, 0, 10_000_000)?;
        within("gateway.max_handshakes", g.max_handshakes, 1, 1_000_000)?;
        within("gateway.outbound_queue", g.outbound_queue, 1, 65_536)?;
        within("gateway.write_timeout_ms", g.write_timeout_ms, 1, HOUR_MS)?;
        within("gateway.push_flush_ms", g.push_flush_ms, 0, 1_000)?;
        within("gateway.read_buffer_bytes", g.read_buffer_bytes, 512, 1 << 20)?;
        within("gateway.read_timeout_ms", g.read_timeout_ms, 100, 24 * HOUR_MS)?;
        within("gateway.handshake_timeout_ms", g.handshake_timeout_ms, 100, 600_000)?;
        within("gateway.request_timeout_ms", g.request_timeout_ms, 1, HOUR_MS)?;
        within("gateway.shutdown_grace_ms", g.shutdown_grace_ms, 0, HOUR_MS)?;
        check("gateway.rpc_advertise", is_address(&g.rpc_advertise), "must be empty or HOST:PORT")?;

        within("worker.weight", w.weight, 1, 1000)?;
        within("worker.blocking_threads", w.blocking_threads, 0, 1024)?;
        for pattern in &w.public_routes {
            let valid = pattern != "*" && mortar_abi::layer::is_pattern(pattern);
            check("worker.public_routes", valid, format!("`{pattern}` is not `main.sub` or `main.*`"))?;
        }
        for (layer, patterns) in &w.layers {
            for pattern in patterns {
                let valid = mortar_abi::layer::is_pattern(pattern);
                let reason = format!("layer `{layer}`: `{pattern}` is not `*`, `main.*` or `main.sub`");
                check("worker.layers", valid, reason)?;
            }
        }
        check("worker.advertise", is_address(&w.advertise), "must be empty or HOST:PORT")?;
        within("worker.drain_quiet_ms", w.drain_quiet_ms, 0, 60_000)?;
        within("worker.shutdown_grace_ms", w.shutdown_grace_ms, 0, HOUR_MS)?;
        check(
            "worker.tags",
            w.tags.len() <= 32 && w.tags.iter().all(|t| t.len() <= 64),
            "at most 32 tags of at most 64 bytes",
        )?;

        check(
            "registry.url",
            r.url == "static" || r.url.starts_with("redis://"),
            "must be `static` or a redis://HOST:PORT[/DB] URL",
        )?;
        within("registry.ttl_ms", r.ttl_ms, 500, HOUR_MS)?;
        within("registry.heartbeat_ms", r.heartbeat_ms, 50, r.ttl_ms / 2)?;
        within("registry.resync_ms", r.resync_ms, 100, HOUR_MS)?;
        within("registry.timeout_ms", r.timeout_ms, 10, 60_000)?;
        for (i, node) in r.nodes.iter().enumerate() {
            check(
                "registry.nodes",
                is_name(&node.id, true),
                format!("entry {i}: id must be 1-64 characters of A-Z a-z 0-9 . _ -"),
            )?;
            check(
                "registry.nodes",
                matches!(node.kind.as_str(), "worker" | "gateway"),
                format!("entry {i} ({}): kind must be `worker` or `gateway`", node.id),
            )?;
            check(
                "registry.nodes",
                !node.addr.is_empty() && is_address(&node.addr),
                format!("entry {i} ({}): addr must be HOST:PORT", node.id),
            )?;
            check(
                "registry.nodes",
                r.nodes[..i].iter().all(|other| other.id != node.id),
                format!("node id `{}` is listed twice", node.id),
            )?;
        }

        within("rpc.connect_timeout_ms", rpc.connect_timeout_ms, 10, 60_000)?;
        within("rpc.handshake_timeout_ms", rpc.handshake_timeout_ms, 10, 60_000)?;
        within("rpc.backoff_min_ms", rpc.backoff_min_ms, 1, 60_000)?;
        within("rpc.backoff_max_ms", rpc.backoff_max_ms, rpc.backoff_min_ms, 600_000)?;
        within("rpc.ping_interval_ms", rpc.ping_interval_ms, 10, 60_000)?;
        within("rpc.ping_timeout_ms", rpc.ping_timeout_ms, 10, 60_000)?;
        // A relayed request carries a whole client frame, plus its envelope.
        within("rpc.max_frame_bytes", rpc.max_frame_bytes, g.max_frame_bytes + 4096, 1 << 30)?;
        within("rpc.max_queued_bytes", rpc.max_queued_bytes, 64 << 10, 1 << 36)?;
        within("rpc.max_connections", rpc.max_connections, 1, 100_000)?;
        within("rpc.max_handshake_bytes", rpc.max_handshake_bytes, 4096, 16 << 20)?;
        within("rpc.max_handshakes", rpc.max_handshakes, 1, rpc.max_connections)?;
        within("rpc.peer_idle_ms", rpc.peer_idle_ms, 100, 24 * HOUR_MS)?;

        let url = self.storage.url.as_str();
        let mongo = url.starts_with("mongodb://") || url.starts_with("mongodb+srv://");
        check("storage.url", url == "embedded" || mongo, "must be `embedded` or a mongodb:// URI")?;
        within("storage.timeout_ms", self.storage.timeout_ms, 100, 600_000)?;
        check("storage.path", !self.storage.path.as_os_str().is_empty(), "must not be empty")?;

        let memory_or_redis = |key, url: &str| {
            check(
                key,
                url == "memory" || url.starts_with("redis://"),
                "must be `memory` or redis://HOST:PORT[/DB]",
            )
        };
        let c = &self.cache;
        memory_or_redis("cache.url", &c.url)?;
        within("cache.max_entries", c.max_entries, 1, 100_000_000)?;
        within("cache.timeout_ms", c.timeout_ms, 10, 60_000)?;
        memory_or_redis("session.url", &self.session.url)?;
        within("session.timeout_ms", self.session.timeout_ms, 10, 60_000)?;
        if self.session.resync_ms > 0 {
            within("session.resync_ms", self.session.resync_ms, 100, HOUR_MS)?;
        }
        if self.tables.poll_ms != 0 {
            within("tables.poll_ms", self.tables.poll_ms, 100, HOUR_MS)?;
        }

        within("admin.max_connections", a.max_connections, 1, 10_000)?;
        within("admin.request_timeout_ms", a.request_timeout_ms, 100, 600_000)?;
        within("admin.max_body_bytes", a.max_body_bytes, 2, 64 << 20)?;
        check(
            "admin.token",
            !a.token.chars().any(|c| c.is_whitespace() || c.is_control()),
            "must not contain spaces or control characters",
        )?;
        Ok(())
    }
}

fn check(key: &'static str, ok: bool, reason: impl Into<String>) -> Result<(), ConfigError> {
    match ok {
        true => Ok(()),
        false => Err(ConfigError::Invalid { key, origin: String::new(), reason: reason.into() }),
    }
}

fn within<T: PartialOrd + Display>(key: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    check(key, min <= value && value <= max, format!("{value} is out of range: must be {min} to {max}"))
}

/// Node ids (`mixed_case`) and cluster names: they go into registry keys and metric labels.
fn is_name(name: &str, mixed_case: bool) -> bool {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '_'
            || c == '-'
            || (mixed_case && (c.is_ascii_uppercase() || c == '.'))
    };
    (1..=64).contains(&name.len()) && name.chars().all(allowed)
}

/// Empty, or `HOST:PORT` with a numeric port.
fn is_address(address: &str) -> bool {
    address.is_empty()
        || address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl NodeConfig {
    /// Where key `key` of `[modules.SECTION]` (or the section, without a key) was set, for error
    /// messages: ` (FILE line N)`, ` (from MORTAR_MODULES__SECTION__KEY)`, ` (in FILE)`, or
    /// nothing when neither says.
    pub fn module_origin(&self, section: &str, key: Option<&str>) -> String {
        if let Some(key) = key {
            let var = format!("MORTAR_MODULES__{}__{}", section.to_uppercase(), key.to_uppercase());
            if std::env::var_os(&var).is_some() {
                return format!(" (from {var})");
            }
        }
        let Some(file) = &self.source else { return String::new() };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match line_of(&text, section, key) {
            Some(line) => format!(" ({} line {line})", file.display()),
            None => format!(" (in {})", file.display()),
        }
    }
}

/// The 1-based line of `text` (TOML) that sets `key` in `[modules.SECTION]`, or the section's
/// header without a key (or when no line of the section sets it).
fn line_of(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let header = format!("[modules.{section}]");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|line| line.split('#').next().unwrap_or("").trim() == header)?;
    let sets = |line: &str, key: &str| {
        line.trim().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let found = key.and_then(|key| {
        lines[start + 1..]
            .iter()
            .take_while(|line| !line.trim_start().starts_with('['))
            .position(|line| sets(line, key))
            .map(|at| start + 1 + at)
    });
    Some(found.unwrap_or(start) + 1)
}

/// What to say of each of `names` (environment variables) that looks like a config override but is
/// not read: `MORTAR_…` without the `__` between section and key (`MORTAR_WORKER_DYNAMIC_MODULES`),
/// with the closest key's variable when one is near. `MORTAR_TEST_…` variables are the tests' own.
pub fn stray_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    fn walk(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}__{key}") };
            match value {
                figment::value::Value::Dict(_, inner) if !inner.is_empty() => walk(&path, inner, out),
                _ => out.push(path),
            }
        }
    }
    let mut known = Vec::new();
    if let Ok(data) = figment::Provider::data(&Serialized::defaults(NodeConfig::default())) {
        data.values().for_each(|dict| walk("", dict, &mut known));
    }
    let known: Vec<String> = known.iter().map(|key| format!("MORTAR_{}", key.to_uppercase())).collect();
    let mut warnings: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with("MORTAR_") && !name.contains("__") && !name.starts_with("MORTAR_TEST_"))
        .map(|name| {
            // Written with one underscore for two: the same letters once the separators are alike.
            let flat = |key: &str| key.replace("__", "_");
            let near = known
                .iter()
                .find(|key| flat(key) == name)
                .map(String::as_str)
                .or_else(|| mortar_cluster::suggest::closest(&name, known.iter().map(String::as_str)));
            let hint = near.map(|key| format!(" (did you mean {key}?)")).unwrap_or_default();
            format!(
                "environment variable {name} is not read: overrides are MORTAR_<SECTION>__<KEY>, with two underscores between section and key{hint}"
            )
        })
        .collect();
    warnings.sort();
    warnings
}

/// Where `key`'s value came from, for error messages: ` in FILE`, ` from MORTAR_…`, or nothing
/// for a default.
fn origin(figment: &Figment, key: &str) -> String {
    let Some(metadata) = figment.find_metadata(key) else { return String::new() };
    match &metadata.source {
        Some(figment::Source::File(path)) => format!(" in {}", path.display()),
        _ if metadata.name.contains("environment") => {
            format!(" from MORTAR_{}", key.to_uppercase().replace('.', "__"))
        }
        _ => String::new(),
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
        let expected = format!(
            "config key `gateway.max_in_flight` in {}: 0 is out of range: must be 1 to 65536",
            conf.0.display()
        );
        assert_eq!(error, expected);
        let conf = write_conf("[gateway]\nlisten = \"nowhere\"\n");
        let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
    }

    /// The dotted paths of every key in a figment's data.
    fn keys(figment: &Figment) -> Vec<String> {
        fn walk(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
            for (key, value) in dict {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match value {
                    figment::value::Value::Dict(_, inner) => walk(&path, inner, out),
                    _ => out.push(path),
                }
            }
        }
        let mut out = Vec::new();
        for dict in figment::Provider::data(figment).unwrap().values() {
            walk("", dict, &mut out);
        }
        out.sort();
        out
    }

    #[test]
    fn a_module_key_is_found_on_its_line() {
        let text = "[node]\nid = \"x\"\n[modules.rank]\n# comment\nclose_grace_ms = \"soon\"\n[modules.mail]\nmax_mails = 0\n";
        assert_eq!(line_of(text, "rank", Some("close_grace_ms")), Some(5));
        assert_eq!(line_of(text, "rank", Some("catch_up_periods")), Some(3), "not set: the section");
        assert_eq!(line_of(text, "mail", None), Some(6));
        assert_eq!(line_of(text, "group", None), None);
    }

    #[test]
    fn stray_environment_variables_are_named_with_the_closest_key() {
        let names = [
            "MORTAR_WORKER_DYNAMIC_MODULES",
            "MORTAR_GATEWAY__LISTEN",
            "MORTAR_TEST_NX_27017",
            "PATH",
            "MORTAR_NOTHING",
        ];
        let warnings = stray_env_vars(names.map(String::from));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[1].contains("MORTAR_WORKER_DYNAMIC_MODULES is not read")
                && warnings[1].ends_with("(did you mean MORTAR_WORKER__DYNAMIC_MODULES?)"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].starts_with("environment variable MORTAR_NOTHING is not read")
                && !warnings[0].contains("did you mean"),
            "{warnings:?}"
        );
    }

    #[test]
    fn shipped_dev_config_lists_every_key_with_its_default() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/dev.toml");
        let mut config = NodeConfig::load(Some(&shipped)).unwrap();
        assert_eq!(config.source.take().as_deref(), Some(shipped.as_path()));
        let defaults = NodeConfig::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
        let listed = keys(&Figment::from(Toml::file_exact(&shipped)));
        let all = keys(&Figment::from(Serialized::defaults(NodeConfig::default())));
        assert_eq!(listed, all, "conf/dev.toml must list every key");
    }

    #[test]
    fn example_cluster_configs_load() {
        for name in ["gateway_1", "worker_1", "worker_2"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../conf/{name}.toml"));
            let config = NodeConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!config.cluster.secret.is_empty(), "{name}");
        }
    }

    #[test]
    fn every_number_has_a_range() {
        let refused = |text: &str, key: &str| {
            let conf = write_conf(text);
            let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")) && error.contains("out of range"), "{text}: {error}");
        };
        // Values that once panicked or aborted a node after it had started.
        refused("[gateway]\noutbound_queue = 3000000000000000000\n", "gateway.outbound_queue");
        refused("[gateway]\nread_buffer_bytes = 100000000000\n", "gateway.read_buffer_bytes");
        refused("[gateway]\nrequest_timeout_ms = 100000000000\n", "gateway.request_timeout_ms");
        refused("[gateway]\npush_flush_ms = 5000\n", "gateway.push_flush_ms");
        refused("[registry]\nheartbeat_ms = 3000\n", "registry.heartbeat_ms");
        refused("[rpc]\nbackoff_min_ms = 500\nbackoff_max_ms = 100\n", "rpc.backoff_max_ms");
        refused("[rpc]\nmax_frame_bytes = 1024\n", "rpc.max_frame_bytes");
        refused("[worker]\nweight = 0\n", "worker.weight");
        refused("[admin]\nmax_connections = 0\n", "admin.max_connections");
    }

    #[test]
    fn cluster_values_are_checked() {
        let refused = |text: &str, needle: &str| {
            let conf = write_conf(text);
            let error = NodeConfig::load(Some(&conf.0)).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        };
        refused("[node]\nid = \"a b\"\n", "`node.id`");
        refused("[cluster]\nname = \"Prod\"\n", "`cluster.name`");
        refused("[registry]\nurl = \"etcd://x\"\n", "`registry.url`");
        refused("[registry]\nnodes = [{ id = \"w\", addr = \"nowhere\" }]\n", "addr must be HOST:PORT");
        refused("[registry]\nnodes = [{ id = \"w\", kind = \"db\", addr = \"h:1\" }]\n", "kind must be");
        refused(
            "[registry]\nnodes = [{ id = \"w\", addr = \"h:1\" }, { id = \"w\", addr = \"h:2\" }]\n",
            "listed twice",
        );
        refused("[registry]\nnodes = [{ id = \"w\", adr = \"h:1\" }]\n", "adr");
        refused("[worker]\nadvertise = \"10.0.0.1\"\n", "`worker.advertise`");
    }

    #[test]
    fn missing_file_is_an_error() {
        let error = NodeConfig::load(Some(Path::new("/nonexistent/mortar.toml"))).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/mortar.toml"), "{error}");
    }
}
