//! A mortar node: the composition root. It reads the node's config, opens the backends, and
//! joins the gateway (`mortar_gateway`) and the runtime (`mortar_runtime`), which never name each
//! other, into the kinds of node the `mortar` command starts, and serves the admin API.
//!
//! Layout:
//! - [`config`]: the node's config file: every crate's sections, environment overrides,
//!   validation.
//! - [`dev`]: gateway and worker in one process, no RPC between them.
//! - [`gateway`]: a cluster gateway: clients, the workers found through the registry.
//! - [`worker`]: a cluster worker: the enabled modules behind the worker RPC service.
//! - [`local`]: the adapters that join a dev node's gateway and worker in one process.
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`) and the admin API.
//! - this file: the listeners, the errors of a start, and what every node opens.

pub mod admin;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod local;
pub mod worker;

use crate::admin::Health;
use crate::config::AdminConfig;
pub use config::NodeConfig;
use mortar_cluster::registry::{NodeEntry, NodeKind, RegistryError};
use mortar_cluster::rpc::{Status, handshake::Identity};
use mortar_runtime::{
    StartError,
    routes::{LoadError, RouteTable},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The sockets a node serves on, bound by the caller (so port 0 and readiness lines work).
pub struct Listeners {
    /// WebSocket clients.
    pub gateway: TcpListener,
    /// The admin endpoints (`/metrics`, `/healthz`, `/readyz`); none to serve no admin endpoints.
    pub admin: Option<TcpListener>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A module library was refused, or the route table could not be built (duplicate route,
    /// unknown module, a handler whose types differ from its rpc, …).
    #[error(transparent)]
    Modules(#[from] LoadError),
    /// A module's `on_start` failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A game config table was refused.
    #[error(transparent)]
    Tables(#[from] mortar_runtime::tables::TablesError),
    /// The registry could not be opened, or the node could not register.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] mortar_abi::cache::CacheError),
    /// The document store could not be opened.
    #[error(transparent)]
    Storage(#[from] mortar_backends::storage::StorageError),
    /// The session store could not be opened.
    #[error(transparent)]
    Sessions(#[from] mortar_backends::session::SessionError),
    /// The config lacks what this kind of node needs.
    #[error("{0}")]
    Config(String),
}

/// Gives the modules their config sections (see [`RouteTable::configure`]); a section a module
/// refuses is reported with the file and line of the key (or the environment variable) it came
/// from.
pub(crate) fn configure(routes: &mut RouteTable, config: &NodeConfig) -> Result<(), NodeError> {
    routes.configure(&config.modules).map_err(|error| match error {
        mortar_runtime::routes::RouteError::Config { section, reason } => {
            // `key: reason`, or serde's `unknown field `key`, expected …`.
            let key = match reason.split_once(": ") {
                Some((key, _)) if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Some(key),
                _ => reason.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()),
            };
            let origin = config.module_origin(&section, key);
            NodeError::Config(format!("modules.{section}: {reason}{origin}"))
        }
        mortar_runtime::routes::RouteError::UnknownConfig { section, available } => {
            let origin = config.module_origin(&section, None);
            let error = mortar_runtime::routes::RouteError::UnknownConfig { section, available };
            NodeError::Config(format!("{error}{origin}"))
        }
        other => NodeError::Modules(LoadError::from(other)),
    })
}

/// The store and cache `config` names for a node's worker, and no player yet (every player is
/// offline until the node gives its worker its players).
///
/// # Errors
/// When one cannot be opened.
async fn open_backends(config: &crate::NodeConfig) -> Result<mortar_runtime::Backends, NodeError> {
    let (store, store_writable) = mortar_backends::storage::open_watched(&config.storage).await?;
    let cache = mortar_backends::cache::open(&config.cache, &config.cluster.name).await?;
    let blocking_threads = match config.worker.blocking_threads {
        0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        threads => threads,
    };
    Ok(mortar_runtime::Backends {
        store,
        cache,
        blocking_threads,
        store_writable,
        ..mortar_runtime::Backends::none()
    })
}

/// The admin listener's task and the way to stop it.
pub(crate) struct AdminTask {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl AdminTask {
    /// Serves the admin endpoints on `listener`, if any.
    /// The admin API is served when `api` is given.
    pub(crate) fn spawn(
        listener: Option<TcpListener>,
        health: &Health,
        config: &AdminConfig,
        api: Option<admin::api::Api>,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = listener.map(|listener| {
            let stop = stop.clone();
            tokio::spawn(admin::serve(listener, health.clone(), config.clone(), api, async move {
                stop.cancelled().await
            }))
        });
        Self { stop, task }
    }

    /// Stops the admin listener and waits for it.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Refuses to start a node whose `session.url` differs from that of a node `registry` lists
/// already (pushes and kicks between them would be lost). Entries that do not say (the static
/// list's) pass: there the handshake refuses instead.
///
/// # Errors
/// The first such node, naming `session.url`.
pub(crate) fn check_sessions(
    me: &NodeEntry,
    registry: &dyn mortar_cluster::registry::Registry,
) -> Result<(), NodeError> {
    let nodes = registry.snapshot();
    let differ =
        nodes.values().filter(|other| other.id != me.id).find_map(|other| me.sessions_differ_from(other));
    differ.map_or(Ok(()), |reason| Err(NodeError::Config(reason)))
}

/// This node as it introduces itself to peers and registers: its entry says `kind`, the address
/// `advertise` (or the bound `rpc_addr`), and for a worker what its `routes` serve: the modules,
/// those with an `on_online` or `on_offline` hook, those that keep documents, and where.
///
/// # Errors
/// When `cluster.secret` is empty, or the node would register an address no peer can dial.
pub(crate) fn identity(
    config: &NodeConfig,
    kind: NodeKind,
    rpc_addr: std::net::SocketAddr,
    advertise: &str,
    routes: Option<&RouteTable>,
) -> Result<Identity, NodeError> {
    if config.cluster.secret.is_empty() {
        return Err(NodeError::Config(
            "cluster.secret is empty: every node of a cluster needs the same secret (set MORTAR_CLUSTER__SECRET)".into(),
        ));
    }
    let addr = match advertise {
        "" if rpc_addr.ip().is_unspecified() => {
            return Err(NodeError::Config(format!(
                "the RPC listener binds {rpc_addr}, which peers cannot dial: set the address to register ({})",
                if kind == NodeKind::Worker { "worker.advertise" } else { "gateway.rpc_advertise" }
            )));
        }
        "" => rpc_addr.to_string(),
        given => given.to_owned(),
    };
    let (mut modules, online_hooks, offline_hooks, documents, keyed): (Vec<String>, _, _, _, _) = match routes
    {
        Some(routes) => (
            routes.modules().map(|module| module.name().to_owned()).collect(),
            routes.hook_modules(Status::Online),
            routes.hook_modules(Status::Offline),
            routes.document_modules(),
            routes
                .keyed_routes()
                .map(|(route, field)| mortar_cluster::registry::KeyedRoute { route: route.to_owned(), field })
                .collect(),
        ),
        None => Default::default(),
    };
    modules.sort_unstable();
    let store = match routes {
        Some(_) => mortar_backends::storage::identity(&config.storage, &config.node.id),
        None => String::new(),
    };
    let entry = NodeEntry {
        id: config.node.id.clone(),
        kind,
        addr,
        modules,
        online_hooks,
        offline_hooks,
        keyed,
        documents,
        store,
        sessions: mortar_backends::session::identity(&config.session),
        version: env!("CARGO_PKG_VERSION").into(),
        weight: config.worker.weight,
        tags: config.worker.tags.clone(),
        started_at_ms: mortar_cluster::registry::now_ms(),
    };
    Ok(Identity { cluster: config.cluster.name.clone(), secret: config.cluster.secret.clone(), entry })
}
