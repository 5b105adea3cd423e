//! The `[cache]` section: where modules' short-lived values and counters are kept.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where modules' cache entries are kept (`mortar::cache`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (this process, the default) or `redis://HOST:PORT[/DB]` (shared by the cluster).
    pub url: String,
    /// Memory cache: the most entries it holds; past it the least useful are evicted.
    pub max_entries: u64,
    /// Redis cache: deadline of each command (past it the operation is `UNAVAILABLE`).
    pub timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { url: "memory".into(), max_entries: 100_000, timeout_ms: 1_000 }
    }
}

impl CacheConfig {
    /// [`CacheConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
