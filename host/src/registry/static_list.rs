//! The static registry: the nodes listed in `registry.nodes`, fixed for the node's lifetime.
//!
//! Nothing registers and nothing expires: a listed worker that is down is simply not connected,
//! and the gateway's pool keeps trying it with backoff, so a restarted worker rejoins on its own.
//! What a worker serves is not listed: the gateway learns it from the worker's handshake.

use super::{Membership, NodeEntry, NodeKind, Nodes, Registry, RegistryError, Watcher};
use crate::config::StaticNode;
use futures::future::{BoxFuture, FutureExt as _};

/// The nodes of the config, as a registry.
pub struct StaticRegistry {
    membership: Membership,
}

impl StaticRegistry {
    /// The registry of `nodes` (validated by the config: unique ids, known kinds).
    pub fn new(nodes: &[StaticNode]) -> Self {
        let membership = Membership::default();
        membership.replace(
            nodes
                .iter()
                .map(|node| {
                    let kind = if node.kind == "gateway" { NodeKind::Gateway } else { NodeKind::Worker };
                    let entry = NodeEntry {
                        id: node.id.clone(),
                        kind,
                        addr: node.addr.clone(),
                        modules: Vec::new(),
                        online_hooks: Vec::new(),
                        offline_hooks: Vec::new(),
                        version: String::new(),
                        weight: 1,
                        tags: Vec::new(),
                        started_at_ms: 0,
                    };
                    (node.id.clone(), entry)
                })
                .collect(),
        );
        Self { membership }
    }
}

impl Registry for StaticRegistry {
    fn register(&self, _: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        std::future::ready(Ok(())).boxed()
    }

    fn deregister(&self, _: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        std::future::ready(Ok(())).boxed()
    }

    fn heartbeat(&self, _: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        std::future::ready(Ok(())).boxed()
    }

    fn snapshot(&self) -> Nodes {
        self.membership.get()
    }

    fn watch(&self) -> Watcher {
        self.membership.watch()
    }
}
