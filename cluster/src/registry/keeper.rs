//! Keeps one node registered while it runs.
//!
//! The heartbeat task ends when [`Keeper::leave`] is called or the keeper is dropped. Until then
//! it refreshes the entry every `registry.heartbeat_ms`; a failed refresh is logged by the
//! backend and retried at the next beat, and a refresh that finds the entry gone registers it
//! again (the backend's `heartbeat` does that), so the node rejoins after any registry outage.

use super::{NodeEntry, Registry, RegistryError};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// A node's registration; see the module docs.
pub struct Keeper {
    registry: Arc<dyn Registry>,
    id: String,
    beats: JoinHandle<()>,
}

impl Keeper {
    /// Registers `entry` and starts its heartbeat.
    ///
    /// # Errors
    /// When the first registration fails: a node does not start unregistered.
    pub async fn start(
        registry: Arc<dyn Registry>,
        entry: NodeEntry,
        interval: Duration,
    ) -> Result<Self, RegistryError> {
        registry.register(&entry).await?;
        let id = entry.id.clone();
        let beats = tokio::spawn({
            let registry = registry.clone();
            async move {
                let mut timer = tokio::time::interval(interval);
                timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                timer.tick().await;
                loop {
                    timer.tick().await;
                    // The backend logs failures (once per outage); the next beat retries.
                    let _ = registry.heartbeat(&entry).await;
                }
            }
        });
        Ok(Self { registry, id, beats })
    }

    /// Stops the heartbeat and removes the entry, so peers stop sending here.
    pub async fn leave(self) {
        self.beats.abort();
        match self.registry.deregister(&self.id).await {
            Ok(()) => tracing::info!(node = %self.id, "deregistered"),
            Err(error) => {
                tracing::warn!(node = %self.id, %error, "cannot deregister: the entry expires at its TTL")
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.beats.abort();
    }
}
