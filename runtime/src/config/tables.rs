//! The `[tables]` section: where the game config tables are read from, and how changes are
//! noticed.

use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Duration};

/// Where the game config tables (`mortar::table!`) of the node's modules are read from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TablesConfig {
    /// The folder holding `<table>.json` files, relative to the working directory. A table whose
    /// file is not there uses its module's built-in rows, or stops the start when it has none.
    pub path: PathBuf,
    /// How often the files are checked for changes (size or modification time), which reloads
    /// every table; 0 reloads only on `SIGHUP`. A reload that fails keeps the loaded tables.
    pub poll_ms: u64,
}

impl Default for TablesConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("conf/tables"), poll_ms: 2_000 }
    }
}

impl TablesConfig {
    /// [`TablesConfig::poll_ms`] as a duration; none when polling is off.
    pub fn poll(&self) -> Option<Duration> {
        (self.poll_ms > 0).then(|| Duration::from_millis(self.poll_ms))
    }
}
