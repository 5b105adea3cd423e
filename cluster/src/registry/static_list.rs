//! The static registry: the nodes listed in `registry.nodes`, and those learnt from peers.
//!
//! Nothing registers and nothing expires: a listed worker that is down is simply not connected,
//! and the gateway's pool keeps trying it with backoff, so a restarted worker rejoins on its own.
//! What a worker serves is not listed: the gateway learns it from the worker's handshake.
//!
//! A node also learns ([`Registry::learn`]) from the peers that connect to it or that it dials:
//! - first hand, a peer's own entry from its handshake: a gateway's push address (so a worker
//!   needs no gateway in its list), a worker's modules. It replaces what the node had for that
//!   id, so a gateway restarted on another port is reached at its new address.
//! - second hand, the nodes a dialling peer knows: a gateway dials every worker and tells each
//!   the others, so workers of a static cluster call each other without listing each other. It
//!   only adds ids the node does not know.
//!
//! A learnt entry is never removed: a node that is gone is simply not connected.

use super::{Membership, NodeEntry, NodeKind, Nodes, Registry, RegistryError, Watcher};
use crate::config::StaticNode;
use futures::future::{BoxFuture, FutureExt as _};
use std::sync::Mutex;

/// The nodes of the config and those learnt, as a registry.
pub struct StaticRegistry {
    membership: Membership,
    /// Serialises learning, so two handshakes at once cannot undo each other's entries.
    learning: Mutex<()>,
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
                    (node.id.clone(), NodeEntry::new(node.id.clone(), kind, node.addr.clone()))
                })
                .collect(),
        );
        Self { membership, learning: Mutex::new(()) }
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

    fn learn(&self, entry: NodeEntry, first_hand: bool) {
        if entry.id.is_empty() || entry.addr.is_empty() {
            return;
        }
        let _learning = self.learning.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = self.membership.get();
        match known.get(&entry.id) {
            Some(_) if !first_hand => {}
            Some(current) if *current == entry => {}
            _ => self.membership.upsert(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Change, tests::entry};

    fn listed(id: &str, addr: &str) -> StaticNode {
        StaticNode { id: id.into(), kind: "worker".into(), addr: addr.into() }
    }

    #[tokio::test]
    async fn first_hand_entries_replace_and_second_hand_ones_only_add() {
        let registry = StaticRegistry::new(&[listed("w1", "127.0.0.1:1")]);
        let mut watcher = registry.watch();
        watcher.changed().await;

        // A peer's view never overrides what the node has.
        let mut elsewhere = entry("w1", &[]);
        elsewhere.addr = "127.0.0.1:9".into();
        registry.learn(elsewhere, false);
        assert_eq!(registry.snapshot()["w1"].addr, "127.0.0.1:1");

        // …but adds what it lacks.
        registry.learn(entry("w2", &[]), false);
        assert_eq!(watcher.changed().await, Some(vec![Change::Added(entry("w2", &[]))]));

        // The node's own word replaces: a gateway restarted on another port.
        let mut gateway = entry("g1", &[]);
        gateway.kind = NodeKind::Gateway;
        registry.learn(gateway.clone(), true);
        gateway.addr = "127.0.0.1:2".into();
        registry.learn(gateway.clone(), true);
        assert_eq!(watcher.changed().await, Some(vec![Change::Added(gateway)]));
    }
}
