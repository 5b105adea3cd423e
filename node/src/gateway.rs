//! `mortar gateway`: holds clients and relays their requests to the workers the registry lists.
//!
//! Starts in this order: the registry, the worker pool (it dials every listed worker), the
//! gateway's own RPC service (workers push and kick through it), the registration, then clients,
//! once every listed worker is connected or `rpc.connect_timeout_ms` + `rpc.handshake_timeout_ms`
//! have passed.
//! `/readyz` is 503 until a worker is connected, and whenever none is.
//!
//! Stops when `shutdown` completes: `/readyz` turns 503, the gateway stops accepting clients,
//! every session finishes its read requests, gets `sys.kick` (`SERVER_SHUTDOWN`) and is closed
//! (see [`gateway::serve`]); then the node deregisters, its RPC service and worker connections
//! close, and the admin listener closes last.

use super::{AdminTask, NodeError, identity};
use crate::admin::Health;
use crate::config::NodeConfig;
use mortar_cluster::registry::{self, NodeKind, keeper::Keeper};
use mortar_cluster::rpc::{
    codec,
    handshake::Hello,
    listener,
    workers::{Dialing, WorkerPool},
};
use mortar_gateway::{self as gateway, Gateway, relay::Relay};
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The sockets a gateway serves on, bound by the caller (so port 0 and readiness lines work).
pub struct GatewayListeners {
    /// WebSocket clients.
    pub clients: TcpListener,
    /// The gateway's RPC service, for workers.
    pub rpc: TcpListener,
    /// The admin endpoints; none to serve none.
    pub admin: Option<TcpListener>,
}

/// Runs a cluster gateway until `shutdown` completes (see the module docs). `ready` is called
/// once it serves clients.
///
/// # Errors
/// A config that lacks the cluster secret, a registry that cannot be opened or registered with;
/// nothing is served then.
pub async fn run(
    config: NodeConfig,
    listeners: GatewayListeners,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let rpc_addr = listeners.rpc.local_addr().map_err(|error| NodeError::Config(error.to_string()))?;
    let me = Arc::new(identity(&config, NodeKind::Gateway, rpc_addr, &config.gateway.rpc_advertise, None)?);
    let registry = registry::open(&config.registry, &config.cluster.name).await?;
    super::check_sessions(&me.entry, &*registry)?;
    let health = Health::default();
    if !config.admin.token.is_empty() {
        tracing::warn!(node = %config.node.id, "admin.token is set, but gateway nodes do not serve the admin API: call a worker's admin listener");
    }
    let admin = AdminTask::spawn(listeners.admin, &health, &config.admin, None);

    let pool = WorkerPool::start(
        me.clone(),
        config.rpc.clone(),
        registry.clone(),
        Some(live_workers(health.clone())),
        Dialing::Always,
    );
    let relay = Relay::cluster(pool.clone(), config.gateway.request_timeout());
    let gateway = if config.session.url == "memory" {
        // The gateways are the session directory: this one keeps its own players.
        Gateway::with_directory(config.gateway.clone(), config.node.id.clone(), relay)
    } else {
        // The workers keep the logins in the session store; the resync task has them purge those
        // this gateway's previous run left.
        Gateway::new(config.gateway.clone(), config.node.id.clone(), relay)
    };
    // A worker's connection lost: the sessions holding wills for it (room members) get them.
    pool.on_down(Box::new({
        let gateway = gateway.downgrade();
        move |worker| {
            if let Some(gateway) = gateway.upgrade() {
                gateway.worker_lost(worker);
            }
        }
    }));
    let resync_stop = CancellationToken::new();
    let resync = (config.session.url != "memory")
        .then(|| gateway::resync::spawn(gateway.downgrade(), config.session.resync(), resync_stop.clone()));

    let rpc_stop = CancellationToken::new();
    let rpc = tokio::spawn({
        let (gateway, stop) = (gateway.clone(), rpc_stop.clone());
        listener::serve(
            listeners.rpc,
            &[NodeKind::Worker],
            me.clone(),
            config.rpc.clone(),
            stop.cancelled_owned(),
            {
                let registry = registry.clone();
                move |hello: Hello, frames| {
                    // A worker calling back tells where it is and what it serves.
                    registry.learn(hello.entry, true);
                    gateway.clone().serve_rpc(codec::transport(frames))
                }
            },
        )
    });
    let keeper = match Keeper::start(registry.clone(), me.entry.clone(), config.registry.heartbeat()).await {
        Ok(keeper) => keeper,
        Err(error) => {
            pool.close();
            rpc_stop.cancel();
            resync_stop.cancel();
            admin.stop().await;
            return Err(error.into());
        }
    };

    // Clients that connect as soon as the readiness line shows find every listed worker there
    // (a script starting the cluster goes on at once), unless one does not answer in time.
    let connecting = config.rpc.connect_timeout() + config.rpc.handshake_timeout();
    let listed = registry.snapshot().values().filter(|node| node.kind == NodeKind::Worker).count();
    if tokio::time::timeout(connecting, pool.connected(listed)).await.is_err() {
        tracing::warn!(node = %config.node.id, live = pool.live_count(), listed, "not every listed worker is connected yet: serving clients anyway");
    }
    health.set_ready(true);
    ready();
    let shutdown = async {
        shutdown.await;
        health.set_ready(false);
    };
    gateway::serve(listeners.clients, gateway, shutdown).await;
    resync_stop.cancel();
    if let Some(resync) = resync {
        let _ = resync.await;
    }

    keeper.leave().await;
    rpc_stop.cancel();
    // Dropping the connections cuts them: no session is left to push to.
    drop(rpc.await);
    pool.close();
    admin.stop().await;
    Ok(())
}

/// The gateway's readiness and `mortar_gateway_workers_live` follow its live workers: not ready
/// while none is connected.
fn live_workers(health: Health) -> mortar_cluster::rpc::workers::OnLive {
    Box::new(move |live| {
        metrics::gauge!(mortar_telemetry::metrics::WORKERS_LIVE).set(live as f64);
        health.set_peers_ok(live > 0);
    })
}
