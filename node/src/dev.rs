//! `mortar dev`: a gateway and a worker with every enabled module in one process.
//!
//! The gateway runs the worker's handlers in-process on each session's task (no RPC, as Pitaya
//! does for a frontend server's own routes). With `gateway.local_dispatch = false` it relays them
//! over tarpc's in-process channel transport instead: the same service and the same gateway code
//! as a cluster over TCP, without sockets between them.

use super::{
    AdminTask, Listeners, NodeError,
    local::{LocalGateway, OwnWorker},
};
use crate::admin::Health;
use crate::config::NodeConfig;
use mortar_cluster::rpc::{Status, WorkerRpcClient};
use mortar_gateway::{self as gateway, Gateway, relay::Relay};
use mortar_runtime::{
    Worker,
    players::StorePlayers,
    routes::{DocumentHome, RouteTable},
};
use std::{future::Future, sync::Arc};
use tokio_util::sync::CancellationToken;

/// Runs a dev node serving clients on `listeners` until `shutdown` completes. `ready` is called
/// once its modules are loaded and started and it serves.
///
/// Stops when `shutdown` completes: `/readyz` turns 503, the gateway closes every session (see
/// [`gateway::serve`]), the worker's modules are stopped, and the admin listener closes last.
///
/// # Errors
/// When the route table cannot be built or a module fails to start; nothing is served then.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    // One node: it is the home of every module's documents.
    let mut routes = RouteTable::for_worker(&config.worker, &DocumentHome::Anywhere)?;
    super::configure(&mut routes, &config)?;
    let tables = routes.load_tables(config.tables.path.clone())?;
    let mut backends = super::open_backends(&config).await?;
    let sessions = mortar_backends::session::open(&config.session, &config.cluster.name).await?;
    let local = Arc::new(LocalGateway::default());
    backends.players = Arc::new(StorePlayers { store: sessions.clone(), gateways: local.clone() });
    let health = Health::with_store(backends.store_writable.clone());
    let worker = Worker::new(config.node.id.clone(), routes, backends);
    worker.start(&config.worker).await?;
    let api = crate::admin::api::Api::new(worker.clone(), &config.admin);
    let admin = AdminTask::spawn(listeners.admin, &health, &config.admin, api);
    let reloading = CancellationToken::new();
    let reloader = tables.watch(config.tables.poll(), reloading.clone());

    let timeout = config.gateway.request_timeout();
    let (relay, server) = if config.gateway.local_dispatch {
        (Relay::local(Arc::new(OwnWorker(worker.clone())), timeout), None)
    } else {
        let (client_side, server_side) = tarpc::transport::channel::unbounded();
        let server = tokio::spawn(worker.clone().serve(server_side));
        let mut rpc_config = tarpc::client::Config::default();
        // Each session bounds its own in-flight requests; the client need not queue on top.
        rpc_config.max_in_flight_requests = usize::MAX;
        let client = WorkerRpcClient::new(rpc_config, client_side).spawn();
        let hooks = [Status::Online, Status::Offline].map(|status| worker.routes().hook_modules(status));
        (Relay::rpc(client, config.node.id.clone(), hooks, timeout), Some(server))
    };
    let resync_every = config.session.resync();
    let gateway = Gateway::new(config.gateway, config.node.id, relay);
    local.set(&gateway);
    let resync_stop = CancellationToken::new();
    let resync = (config.session.url != "memory")
        .then(|| gateway::resync::spawn(gateway.downgrade(), resync_every, resync_stop.clone()));

    health.set_ready(true);
    ready();
    let shutdown = async {
        shutdown.await;
        health.set_ready(false);
    };
    gateway::serve(listeners.gateway, gateway, shutdown).await;
    resync_stop.cancel();
    if let Some(resync) = resync {
        let _ = resync.await;
    }

    // The gateway (and with it the last tarpc client) is gone: the server sees its channel close.
    if let Some(server) = server {
        let _ = server.await;
    }
    reloading.cancel();
    let _ = reloader.await;
    worker.stop(config.worker.shutdown_grace()).await;
    admin.stop().await;
    Ok(())
}
