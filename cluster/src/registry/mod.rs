//! The service registry: which nodes the cluster has, where they listen and what they serve.
//!
//! Layout:
//! - this file: [`NodeEntry`], the [`Registry`] trait, [`Membership`] (the node list a backend
//!   keeps) and [`Watcher`] (added / updated / removed changes, computed per watcher), [`open`].
//! - [`memory`]: in-process (`mortar dev`, tests).
//! - [`static_list`]: the nodes listed in the config (`registry.url = "static"`).
//! - [`redis`]: entries with a TTL in Redis, refreshed by heartbeat, change notices over
//!   pub/sub, and a periodic full resync (`registry.url = "redis://…"`).
//! - [`keeper`]: the task that keeps a node registered while it runs.
//!
//! A registry tells who should be there; whether a node answers is the RPC layer's business (a
//! gateway marks a worker down on the first failed call, before any TTL expires).

pub mod keeper;
pub mod memory;
pub mod redis;
pub mod static_list;

use crate::config::RegistryConfig;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::watch;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Holds client connections; serves the gateway RPC service (pushes, kicks).
    Gateway,
    /// Runs modules; serves the worker RPC service.
    Worker,
}

impl NodeKind {
    /// `gateway` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Worker => "worker",
        }
    }
}

/// One node as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Unique id within the cluster.
    pub id: String,
    /// Gateway or worker.
    pub kind: NodeKind,
    /// The RPC address peers dial, `HOST:PORT`.
    pub addr: String,
    /// The modules it serves (workers).
    pub modules: Vec<String>,
    /// The modules among them with an `on_online` hook.
    #[serde(default)]
    pub online_hooks: Vec<String>,
    /// The modules among them with an `on_offline` hook.
    #[serde(default)]
    pub offline_hooks: Vec<String>,
    /// The routes among theirs that are routed by a request field (`#[handler(…, key = field)]`).
    #[serde(default)]
    pub keyed: Vec<KeyedRoute>,
    /// The modules among them that keep documents (`#[derive(Document)]` types in their crate).
    #[serde(default)]
    pub documents: Vec<String>,
    /// Where it keeps those documents (see `storage::identity`): workers whose stores differ
    /// must not serve the same module with documents.
    #[serde(default)]
    pub store: String,
    /// Where its cluster keeps players' sessions (see `session::identity`): every node of a
    /// cluster must say the same.
    #[serde(default)]
    pub sessions: String,
    /// The mortar version it runs.
    pub version: String,
    /// Its share of players relative to other workers of the same modules.
    pub weight: u32,
    /// Operator labels.
    pub tags: Vec<String>,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

/// A route whose requests are routed by the value of one of their fields, not by the player: every
/// request with one value reaches one worker among those serving the module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedRoute {
    /// `main.sub`.
    pub route: String,
    /// The number of the request's field that holds the key.
    pub field: u32,
}

impl NodeEntry {
    /// Node `id` of `kind` at `addr`, serving nothing known yet, of weight 1: a peer as a static
    /// list names it before its handshake tells the rest.
    pub fn new(id: impl Into<String>, kind: NodeKind, addr: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            addr: addr.into(),
            modules: Vec::new(),
            online_hooks: Vec::new(),
            offline_hooks: Vec::new(),
            keyed: Vec::new(),
            documents: Vec::new(),
            store: String::new(),
            sessions: String::new(),
            version: String::new(),
            weight: 1,
            tags: Vec::new(),
            started_at_ms: 0,
        }
    }

    /// Why this node and `other` must not be in one cluster, if they must not: they keep players'
    /// sessions in different places, so pushes and kicks between them would be lost. An entry
    /// that does not say (an older node, or a static list's) passes.
    pub fn sessions_differ_from(&self, other: &NodeEntry) -> Option<String> {
        (!other.sessions.is_empty() && other.sessions != self.sessions).then(|| {
            format!(
                "session.url differs: node `{}` keeps players' sessions in {}, node `{}` in {}; pushes and kicks between them would be lost: give every node of the cluster the same session.url (MORTAR_SESSION__URL)",
                other.id, other.sessions, self.id, self.sessions
            )
        })
    }

    /// Whether the node serves module `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.modules.iter().any(|module| module == name)
    }

    /// Whether the node keeps documents of module `name`.
    pub fn keeps_documents_of(&self, name: &str) -> bool {
        self.documents.iter().any(|module| module == name)
    }

    /// Whether this node started before `other` (ties: the smaller id): of two workers whose
    /// documents of one module would split, the earlier keeps serving it.
    pub fn started_before(&self, other: &NodeEntry) -> bool {
        (self.started_at_ms, &self.id) < (other.started_at_ms, &other.id)
    }

    /// A module this worker keeps documents of that `earlier`, another worker started before
    /// it, serves with another store: the two would each hold part of the module's data, so this
    /// one must not serve it.
    pub fn splits_documents_with<'a>(&'a self, earlier: &NodeEntry) -> Option<&'a str> {
        if earlier.id == self.id || earlier.kind != NodeKind::Worker || earlier.store == self.store {
            return None;
        }
        if !earlier.started_before(self) {
            return None;
        }
        self.documents.iter().find(|module| earlier.keeps_documents_of(module)).map(String::as_str)
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The backend could not be reached or answered an error.
    #[error("registry {url} is unavailable: {reason}")]
    Unavailable {
        /// The registry's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry URL names no backend.
    #[error("registry.url `{0}`: must be `static` or redis://HOST:PORT[/DB]")]
    BadUrl(String),
}

/// The nodes of the cluster, by id.
pub type Nodes = BTreeMap<String, NodeEntry>;

/// A change of the cluster's membership, as one watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A node appeared.
    Added(NodeEntry),
    /// A node's entry changed (address, modules, weight…).
    Updated(NodeEntry),
    /// A node left, or its entry expired.
    Removed(String),
}

/// A service registry backend.
///
/// `register` and `heartbeat` are called by the node's [`keeper`]; `watch` by whoever follows
/// membership (a gateway's worker pool). Every method that talks to a server has a deadline.
pub trait Registry: Send + Sync + 'static {
    /// Adds or replaces this node's entry.
    fn register(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Removes the entry of node `id`.
    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Keeps this node's entry alive (a TTL refresh); re-registers it if the backend lost it.
    fn heartbeat(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// The nodes known now (the last good reading, when the backend is unreachable).
    fn snapshot(&self) -> Nodes;
    /// Follows membership from now on; the first changes add every node known now.
    fn watch(&self) -> Watcher;
    /// Takes in a node's entry learnt from a peer instead of from the backend: `first_hand` when
    /// the node said it itself (its handshake), else a peer's view of the cluster. The static
    /// registry adds what its list lacks (a gateway's push address, the workers a gateway knows);
    /// backends that are the cluster's truth (Redis) ignore it.
    fn learn(&self, entry: NodeEntry, first_hand: bool) {
        let _ = (entry, first_hand);
    }
}

/// The node list of a backend, shared with its watchers.
#[derive(Clone)]
pub struct Membership {
    nodes: Arc<watch::Sender<Arc<Nodes>>>,
}

impl Default for Membership {
    fn default() -> Self {
        Self { nodes: Arc::new(watch::Sender::new(Arc::default())) }
    }
}

impl Membership {
    /// Replaces the node list; watchers see the differences.
    pub fn replace(&self, nodes: Nodes) {
        self.nodes.send_if_modified(|current| {
            let changed = **current != nodes;
            if changed {
                *current = Arc::new(nodes);
            }
            changed
        });
    }

    /// Adds or replaces one entry.
    pub fn upsert(&self, entry: NodeEntry) {
        let mut nodes = self.get();
        nodes.insert(entry.id.clone(), entry);
        self.replace(nodes);
    }

    /// Removes one entry.
    pub fn remove(&self, id: &str) {
        let mut nodes = self.get();
        if nodes.remove(id).is_some() {
            self.replace(nodes);
        }
    }

    /// The node list now.
    pub fn get(&self) -> Nodes {
        (**self.nodes.borrow()).clone()
    }

    /// A watcher that first sees every node known now as added.
    pub fn watch(&self) -> Watcher {
        let mut receiver = self.nodes.subscribe();
        receiver.mark_changed();
        Watcher { receiver, seen: Nodes::new() }
    }
}

/// Follows a registry's membership: each call to [`Watcher::changed`] returns what changed since
/// the last one. Computed against what this watcher has seen, so a slow watcher never misses a
/// change: it sees the net difference.
pub struct Watcher {
    receiver: watch::Receiver<Arc<Nodes>>,
    seen: Nodes,
}

impl Watcher {
    /// Waits for the membership to change and returns the changes, or `None` when the registry
    /// is gone.
    pub async fn changed(&mut self) -> Option<Vec<Change>> {
        loop {
            self.receiver.changed().await.ok()?;
            let now = self.receiver.borrow_and_update().clone();
            let changes = diff(&self.seen, &now);
            self.seen = (*now).clone();
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }
}

/// What turns `before` into `after`.
fn diff(before: &Nodes, after: &Nodes) -> Vec<Change> {
    let mut changes = Vec::new();
    for (id, entry) in after {
        match before.get(id) {
            None => changes.push(Change::Added(entry.clone())),
            Some(old) if old != entry => changes.push(Change::Updated(entry.clone())),
            Some(_) => {}
        }
    }
    changes.extend(before.keys().filter(|id| !after.contains_key(*id)).map(|id| Change::Removed(id.clone())));
    changes
}

/// Opens the registry `config.url` names, of the cluster named `cluster`.
///
/// # Errors
/// A URL that names no backend, or a Redis server that cannot be reached at start.
pub async fn open(config: &RegistryConfig, cluster: &str) -> Result<Arc<dyn Registry>, RegistryError> {
    let url = config.url.as_str();
    if url == "static" {
        return Ok(Arc::new(static_list::StaticRegistry::new(&config.nodes)));
    }
    if url.starts_with("redis://") {
        return Ok(Arc::new(redis::RedisRegistry::connect(config, cluster).await?));
    }
    Err(RegistryError::BadUrl(url.to_owned()))
}

/// Milliseconds since the Unix epoch, for `started_at_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(id: &str, modules: &[&str]) -> NodeEntry {
        NodeEntry {
            modules: modules.iter().map(|m| (*m).to_owned()).collect(),
            version: "test".into(),
            ..NodeEntry::new(id, NodeKind::Worker, "127.0.0.1:1")
        }
    }

    #[tokio::test]
    async fn watchers_see_every_node_then_the_net_changes() {
        let membership = Membership::default();
        membership.upsert(entry("w1", &["echo"]));
        let mut watcher = membership.watch();
        assert_eq!(watcher.changed().await, Some(vec![Change::Added(entry("w1", &["echo"]))]));

        // Several changes before the watcher looks: it sees their net effect.
        membership.upsert(entry("w2", &["echo"]));
        membership.upsert(entry("w1", &["echo", "pack"]));
        membership.remove("w2");
        assert_eq!(watcher.changed().await, Some(vec![Change::Updated(entry("w1", &["echo", "pack"]))]));

        membership.remove("w1");
        assert_eq!(watcher.changed().await, Some(vec![Change::Removed("w1".into())]));
    }

    #[tokio::test]
    async fn a_replace_with_the_same_nodes_wakes_no_watcher() {
        let membership = Membership::default();
        membership.upsert(entry("w1", &["echo"]));
        let mut watcher = membership.watch();
        watcher.changed().await;
        membership.replace(membership.get());
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), watcher.changed()).await;
        assert!(woke.is_err(), "an unchanged list is no change");
    }
}
