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
    /// Redis, gateways: how often a gateway checks whether the store lost its logins (a server
    /// restarted empty), one small command each time; when it did, the gateway puts back the
    /// logins of the sessions it holds (`gateway::resync`). Until then those players count as
    /// offline: pushes to them are dropped, and a second login does not kick the first. 0: never.
    pub resync_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { url: "memory".into(), timeout_ms: 1_000, resync_ms: 1_000 }
    }
}

impl SessionConfig {
    /// [`SessionConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`SessionConfig::resync_ms`] as a duration.
    pub fn resync(&self) -> Duration {
        Duration::from_millis(self.resync_ms)
    }
}
