//! `mortar worker`: runs the enabled modules behind the worker RPC service.
//!
//! Starts in this order: the registry and the connections to the gateways (pushes, kicks, logins)
//! and to the other workers (calls to modules this worker does not serve), the modules
//! (`on_start`), the RPC service (for gateways and other workers), the registration.
//!
//! Stops when `shutdown` completes, so that a rolling restart loses no request:
//! 1. `/readyz` turns 503 and the worker starts draining: requests that arrive from now on are
//!    handed back unhandled, and their gateways send them to another worker;
//! 2. it deregisters, and stops accepting connections;
//! 3. it waits until no request runs and none has arrived for `worker.drain_quiet_ms`, at most
//!    `worker.shutdown_grace_ms`;
//! 4. it closes its connections, stops the modules (`on_stop`) and the admin listener.

use super::{AdminTask, NodeError, identity};
use crate::{
    admin::Health,
    config::NodeConfig,
    gateway::workers::WorkerPool,
    registry::{self, NodeKind, keeper::Keeper},
    rpc::{Status, codec, listener},
    worker::{
        Backends, Worker,
        gateways::GatewayPool,
        routes::{LoadError, RouteTable},
        tables::Tables,
    },
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
/// config without the cluster secret, a registry that cannot be opened or registered with.
pub async fn run(
    config: NodeConfig,
    listeners: WorkerListeners,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let routes = RouteTable::for_worker(&config.worker)?;
    routes.configure(&config.modules).map_err(LoadError::from)?;
    let tables = Tables::new(config.tables.path.clone(), routes.tables());
    tables.load()?;
    super::warn_unshared_sessions(&config);
    let mut backends = Backends::open(&config).await?;
    let mut modules: Vec<String> = routes.modules().map(|module| module.name().to_owned()).collect();
    modules.sort_unstable();
    if modules.is_empty() {
        return Err(NodeError::Config(
            "this worker has no module to serve: none is linked into the binary".into(),
        ));
    }
    let rpc_addr = listeners.rpc.local_addr().map_err(|error| NodeError::Config(error.to_string()))?;
    let (online, offline) = (routes.hook_modules(Status::Online), routes.hook_modules(Status::Offline));
    let advertise = &config.worker.advertise;
    let me = Arc::new(identity(&config, NodeKind::Worker, rpc_addr, advertise, modules, online, offline)?);
    let registry = registry::open(&config).await?;
    let gateways =
        GatewayPool::start(me.clone(), config.rpc.clone(), registry.clone(), backends.sessions.clone());
    backends.gateways = Arc::new(gateways.clone());
    // Its readiness does not depend on other workers.
    let workers = WorkerPool::start(me.clone(), config.rpc.clone(), registry.clone(), None);
    backends.workers = Some(workers.clone());
    let worker = Worker::new(config.node.id.clone(), routes, backends);
    worker.start()?;
    let health = Health::default();
    let api = crate::admin::api::Api::new(worker.clone(), &config.admin);
    let admin = AdminTask::spawn(listeners.admin, &health, &config.admin, api);
    let reloading = CancellationToken::new();
    let reloader = tables.watch(config.tables.poll(), reloading.clone());

    let accepting = CancellationToken::new();
    let rpc = tokio::spawn({
        let (worker, stop) = (worker.clone(), accepting.clone());
        listener::serve(
            listeners.rpc,
            &[NodeKind::Gateway, NodeKind::Worker],
            me.clone(),
            config.rpc.clone(),
            stop.cancelled_owned(),
            move |_, frames| worker.clone().serve(codec::transport(frames)),
        )
    });
    let keeper = match Keeper::start(registry, me.entry.clone(), config.registry.heartbeat()).await {
        Ok(keeper) => keeper,
        Err(error) => {
            accepting.cancel();
            reloading.cancel();
            gateways.close();
            workers.close();
            worker.stop();
            admin.stop().await;
            return Err(error.into());
        }
    };

    health.set_ready(true);
    ready();
    shutdown.await;

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
    worker.stop();
    admin.stop().await;
    Ok(())
}
