//! The `[storage]` section: where modules' documents are kept.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where modules' documents are kept (docs/storage.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `embedded`: a database file in `path`, no server (the default).
    pub url: String,
    /// The embedded store's directory, created when missing (`--data DIR` on `mortar dev` and
    /// `mortar worker` overrides it). One node at a time may use it.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { url: "embedded".into(), path: PathBuf::from("./mortar-data") }
    }
}
