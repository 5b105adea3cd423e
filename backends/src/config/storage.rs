//! The `[storage]` section: where modules' documents are kept.

use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Duration};

/// Where modules' documents are kept (docs/storage.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `embedded`: a database file in `path`, no server (the default); or a MongoDB URI naming
    /// its database, `mongodb://HOST:PORT/DATABASE` (set it from the environment when it holds a
    /// password: `MORTAR_STORAGE__URL`).
    pub url: String,
    /// The embedded store's directory, created when missing (`--data DIR` on `mortar dev` and
    /// `mortar worker` overrides it). One node at a time may use it.
    pub path: PathBuf,
    /// MongoDB: how long finding a server and connecting may take; a node whose server does not
    /// answer at start stops with an error after about twice this.
    pub timeout_ms: u64,
    /// With `url = "embedded"` on a cluster worker: the modules that keep documents (user, pack…)
    /// whose documents this worker's store holds; of the modules that keep documents it serves
    /// only these (and those `worker.modules` names), the others' home being another worker.
    /// Empty: every module it enables. Each module that keeps documents must have one home in the
    /// cluster: of two workers serving it with their own stores the later one is refused
    /// (docs/cluster.md). Not used with a shared store (MongoDB), where every worker serves every
    /// module it enables.
    pub embedded_modules: Vec<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "embedded".into(),
            path: PathBuf::from("./mortar-data"),
            timeout_ms: 5_000,
            embedded_modules: Vec::new(),
        }
    }
}

impl StorageConfig {
    /// [`StorageConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
