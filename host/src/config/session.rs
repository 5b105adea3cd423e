//! The `[session]` section: where the session store keeps logged-in players' locations.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where logged-in players' locations are kept (user id → gateway and session).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// `memory` (the default: in `mortar dev` this process; in a cluster each gateway keeps its own
    /// players and workers ask the gateways) or `redis://HOST:PORT[/DB]`. Every node of a cluster
    /// must say the same: a peer that says otherwise is refused (docs/cluster.md).
    pub url: String,
    /// Redis: deadline of each command.
    pub timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { url: "memory".into(), timeout_ms: 1_000 }
    }
}

impl SessionConfig {
    /// [`SessionConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
