//! An in-process registry: what registers is there until it deregisters. For `mortar dev` and
//! tests; nothing expires.

use super::{Membership, NodeEntry, Nodes, Registry, RegistryError, Watcher};
use futures::future::{BoxFuture, FutureExt as _};

/// A registry held in this process's memory.
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    membership: Membership,
}

impl Registry for MemoryRegistry {
    fn register(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.membership.upsert(entry.clone());
        std::future::ready(Ok(())).boxed()
    }

    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.membership.remove(id);
        std::future::ready(Ok(())).boxed()
    }

    fn heartbeat(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.register(entry)
    }

    fn snapshot(&self) -> Nodes {
        self.membership.get()
    }

    fn watch(&self) -> Watcher {
        self.membership.watch()
    }
}
