//! The `[worker]` section: which modules a node runs, and how it stops.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

/// The worker: which modules this node runs, and where gateways reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Names of the linked modules to enable; empty enables every module linked into the binary.
    pub modules: Vec<String>,
    /// Module libraries (cdylibs built with `mortar::export_module!()`) to load at start, paths
    /// relative to the working directory. Every module of a listed library is served.
    pub dynamic_modules: Vec<PathBuf>,
    /// Client routes that need no login besides those their handler marks `public`: `main.sub`,
    /// or `main.*` for a whole module. Every other client route answers `NOT_LOGGED_IN` to a
    /// session that has not logged in.
    pub public_routes: Vec<String>,
    /// Middleware placement: a module's layer (`mortar::layer!`) by name, and the route patterns
    /// (`*`, `main.*`, `main.sub`) it wraps on this node instead of those its module gave; an
    /// empty list switches it off. A name no loaded module declares stops the start.
    pub layers: BTreeMap<String, Vec<String>>,
    /// How many blocking works of modules (`Ctx::blocking`: password hashes, …) run at once;
    /// further ones wait. 0: one per CPU core.
    pub blocking_threads: usize,
    /// Address the worker's RPC service binds (`mortar worker --rpc-listen` overrides it; port 0
    /// picks a free port, printed on the readiness line).
    pub listen: SocketAddr,
    /// The address gateways dial, as registered; empty: the bound address (set it when `listen`
    /// binds 0.0.0.0 or sits behind NAT).
    pub advertise: String,
    /// This worker's share of players relative to the others serving the same module (1–1000):
    /// a worker of weight 2 gets about twice the sessions of one of weight 1.
    pub weight: u32,
    /// Free-form labels registered with the node (zone, build, …), shown to operators.
    pub tags: Vec<String>,
    /// On shutdown, after the last request finished, how long no new request must arrive before
    /// the worker closes its connections. Requests arriving meanwhile are handed back to their
    /// gateway unhandled, which retries them on another worker.
    pub drain_quiet_ms: u64,
    /// On shutdown, how long in-flight requests get to finish before the worker exits anyway.
    pub shutdown_grace_ms: u64,
    /// How long a module's `on_start` hook may take (its `Ctx::deadline`) before the start fails.
    pub start_timeout_ms: u64,
    /// How long a worker's lease on a scheduled job lasts without renewal: how soon another worker
    /// takes over the job of a worker that died (see `mortar::job`).
    pub job_lease_ms: u64,
    /// A scheduled job's deadline, from the start of a run; a run still going then is cut short
    /// and tried again.
    pub job_timeout_ms: u64,
    /// How long after a failed run of a scheduled job it is tried again.
    pub job_retry_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            modules: Vec::new(),
            dynamic_modules: Vec::new(),
            public_routes: Vec::new(),
            layers: BTreeMap::new(),
            blocking_threads: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            advertise: String::new(),
            weight: 1,
            tags: Vec::new(),
            drain_quiet_ms: 200,
            shutdown_grace_ms: 10_000,
            start_timeout_ms: 30_000,
            job_lease_ms: 10_000,
            job_timeout_ms: 60_000,
            job_retry_ms: 5_000,
        }
    }
}

impl WorkerConfig {
    /// [`WorkerConfig::drain_quiet_ms`] as a duration.
    pub fn drain_quiet(&self) -> Duration {
        Duration::from_millis(self.drain_quiet_ms)
    }

    /// How the worker runs its modules' scheduled jobs.
    pub fn job_timing(&self) -> crate::jobs::JobTiming {
        crate::jobs::JobTiming {
            lease: Duration::from_millis(self.job_lease_ms.max(300)),
            timeout: Duration::from_millis(self.job_timeout_ms.max(1)),
            retry: Duration::from_millis(self.job_retry_ms),
        }
    }

    /// [`WorkerConfig::start_timeout_ms`] as a duration.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }

    /// [`WorkerConfig::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
