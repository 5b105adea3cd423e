//! `mortar worker`: runs the enabled modules behind the worker RPC service.
//!
//! Starts in this order: the modules it may serve (with the embedded store, of the modules that
//! keep documents only those `storage.embedded_modules` gives it), the registry and the
//! connections to the gateways (pushes, kicks, logins) and to the other workers (calls to modules
//! this worker does not serve), the modules (`on_start`), the RPC service (for gateways and other
//! workers), the registration.
//!
//! A worker refuses to serve a module that keeps documents when a worker started before it
//! serves that module with another store (two embedded stores: the module's data would split):
//! as soon as it learns of that worker (from the registry right after it starts, or with the
//! static registry from a gateway that knows both), it stops as below and exits with an error
//! naming `storage.url`. Gateways never send such a module's requests to the later worker
//! meanwhile.
//!
//! Stops when `shutdown` completes, so that a rolling restart loses no request:
//! 1. `/readyz` turns 503 and the worker starts draining: requests that arrive from now on are
//!    handed back unhandled, and their gateways send them to another worker;
//! 2. it deregisters, and stops accepting connections;
//! 3. it waits until no request runs and none has arrived for `worker.drain_quiet_ms`, at most
//!    `worker.shutdown_grace_ms`;
//! 4. it closes its connections, stops the modules (`on_stop`) and the admin listener.

use super::{AdminTask, NodeError, identity};
use crate::admin::Health;
use crate::config::NodeConfig;
use mortar_cluster::registry::{self, Change, NodeEntry, NodeKind, Registry, keeper::Keeper};
use mortar_cluster::rpc::workers::{Dialing, WorkerPool};
use mortar_cluster::rpc::{handshake::Hello, listener};
use mortar_runtime::{
    Worker,
    directory::GatewayDirectory,
    gateways::GatewayPool,
    players::StorePlayers,
    routes::{DocumentHome, RouteTable},
};
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The sockets a worker serves on, bound by the caller.
pub struct WorkerListeners {
    /// The worker RPC service, for gateways.
    pub rpc: TcpListener,
    /// The admin endpoints; none to serve none.
    pub admin: Option<TcpListener>,
}

/// Runs a cluster worker until `shutdown` completes (see the module docs). `ready` is called once
/// it is registered and serves.
///
/// # Errors
/// A route table that cannot be built, no module to serve, a module that fails to start, a
/// config without the cluster secret, a registry that cannot be opened or registered with, a
/// module whose documents another worker keeps in another store (then once it learns of that
/// worker, after it became ready).
pub async fn run(
    config: NodeConfig,
    listeners: WorkerListeners,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut routes = RouteTable::for_worker(&config.worker, &DocumentHome::of(&config.storage))?;
    super::configure(&mut routes, &config)?;
    let tables = routes.load_tables(config.tables.path.clone())?;
    if routes.modules().next().is_none() {
        return Err(NodeError::Config(
            "this worker has no module to serve: none is linked into the binary, or worker.modules and storage.embedded_modules leave none".into(),
        ));
    }
    let rpc_addr = listeners.rpc.local_addr().map_err(|error| NodeError::Config(error.to_string()))?;
    let me =
        Arc::new(identity(&config, NodeKind::Worker, rpc_addr, &config.worker.advertise, Some(&routes))?);
    let registry = registry::open(&config.registry, &config.cluster.name).await?;
    super::check_sessions(&me.entry, &*registry)?;
    let mut backends = super::open_backends(&config).await?;
    let sessions = match config.session.url.as_str() {
        "memory" => None,
        _ => Some(mortar_backends::session::open(&config.session, &config.cluster.name).await?),
    };
    let gateways = GatewayPool::start(me.clone(), config.rpc.clone(), registry.clone(), sessions.clone());
    backends.players = match sessions {
        // The gateways are the session directory: they are asked.
        None => Arc::new(GatewayDirectory::new(gateways.clone())),
        Some(store) => Arc::new(StorePlayers { store, gateways: Arc::new(gateways.clone()) }),
    };
    // Its readiness does not depend on other workers.
    let workers =
        WorkerPool::start(me.clone(), config.rpc.clone(), registry.clone(), None, Dialing::OnDemand);
    backends.workers = Some(workers.clone());
    let health = Health::with_store(backends.store_writable.clone());
    let worker = Worker::new(config.node.id.clone(), routes, backends);
    worker.start(&config.worker).await?;
    let api = crate::admin::api::Api::new(worker.clone(), &config.admin);
    let admin = AdminTask::spawn(listeners.admin, &health, &config.admin, api);
    let reloading = CancellationToken::new();
    let reloader = tables.watch(config.tables.poll(), reloading.clone());

    let accepting = CancellationToken::new();
    let rpc = tokio::spawn({
        let (worker, stop, registry) = (worker.clone(), accepting.clone(), registry.clone());
        listener::serve(
            listeners.rpc,
            &[NodeKind::Gateway, NodeKind::Worker],
            me.clone(),
            config.rpc.clone(),
            stop.cancelled_owned(),
            move |hello: Hello, frames| {
                // With the static registry, what a peer says of itself and of the cluster is how
                // this worker learns the gateways it pushes through and the workers it calls.
                registry.learn(hello.entry, true);
                hello.known.into_iter().for_each(|entry| registry.learn(entry, false));
                worker.clone().serve_connection(frames)
            },
        )
    });
    let keeper = match Keeper::start(registry.clone(), me.entry.clone(), config.registry.heartbeat()).await {
        Ok(keeper) => keeper,
        Err(error) => {
            accepting.cancel();
            reloading.cancel();
            gateways.close();
            workers.close();
            worker.stop(config.worker.shutdown_grace()).await;
            admin.stop().await;
            return Err(error.into());
        }
    };

    health.set_ready(true);
    ready();
    let refused = tokio::select! {
        () = shutdown => None,
        refusal = refusal(registry, me.entry.clone()) => Some(refusal),
    };

    health.set_ready(false);
    worker.start_draining();
    keeper.leave().await;
    accepting.cancel();
    let connections = rpc.await;
    if !worker.drained(config.worker.drain_quiet(), config.worker.shutdown_grace()).await {
        tracing::warn!(node = %config.node.id, running = worker.in_flight(), "requests still running after worker.shutdown_grace_ms: cutting them");
    }
    drop(connections);
    reloading.cancel();
    let _ = reloader.await;
    gateways.close();
    workers.close();
    worker.stop(config.worker.shutdown_grace()).await;
    admin.stop().await;
    refused.map_or(Ok(()), Err)
}

/// Completes with the refusal once `registry` lists a worker that makes `me` refuse to serve (see
/// [`split_refusal`]); never while none does.
async fn refusal(registry: Arc<dyn Registry>, me: NodeEntry) -> NodeError {
    let mut watcher = registry.watch();
    while let Some(changes) = watcher.changed().await {
        for change in changes {
            if let Change::Added(other) | Change::Updated(other) = change
                && let Some(refusal) = split_refusal(&me, &other)
            {
                tracing::error!(node = %me.id, "{refusal}");
                return refusal;
            }
        }
    }
    std::future::pending().await
}

/// Why worker `me` must not serve one of its modules next to worker `other`, if it must not: the
/// module keeps documents, and `other`, started first, serves it with another store.
fn split_refusal(me: &NodeEntry, other: &NodeEntry) -> Option<NodeError> {
    let module = me.splits_documents_with(other)?;
    Some(NodeError::Config(format!(
        "module `{module}` keeps documents, and worker `{}` (started first) serves it with another store ({}; this worker's: {}): the two would each hold part of its players' data, so this worker refuses to serve it. With storage.url = \"embedded\" give each module that keeps documents one worker (storage.embedded_modules, or worker.modules), or give every worker one shared storage.url = \"mongodb://…\"",
        other.id, other.store, me.store
    )))
}
