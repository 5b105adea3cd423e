//! The adapters that join a node's own gateway and worker in one process (`mortar dev`): the
//! runtime reaches the gateway through its [`Gateways`] trait, the gateway the worker through its
//! [`Upstream`] trait, and neither names the other's types.

use bytes::Bytes;
use mortar_abi::{Code, future::BoxFuture};
use mortar_cluster::rpc::{
    AgentMessage, Logins, LoginsAnswer, Presence, PushBatch, PushReport, Reply, Wills,
};
use mortar_gateway::{Gateway, WeakGateway, relay::Upstream};
use mortar_runtime::{Worker, gateways::Gateways};
use std::{sync::OnceLock, time::Instant};

/// The node's worker as its gateway's upstream: requests run on the calling session's task.
pub struct OwnWorker(pub Worker);

impl Upstream for OwnWorker {
    fn handle(&self, msg: AgentMessage, deadline: Instant) -> BoxFuture<Reply> {
        let worker = self.0.clone();
        Box::pin(async move { worker.handle(msg, deadline).await })
    }

    fn presence(&self, presence: Presence, deadline: Instant) -> BoxFuture<()> {
        let worker = self.0.clone();
        Box::pin(async move {
            let modules = worker.routes().hook_modules(presence.status);
            worker.presence(presence, &modules, deadline).await;
        })
    }

    fn logins(&self, change: Logins) -> BoxFuture<Result<LoginsAnswer, Code>> {
        let worker = self.0.clone();
        Box::pin(async move { worker.logins(change).await })
    }

    fn descriptors(&self) -> Bytes {
        self.0.routes().descriptors()
    }
}

/// The node's own gateway, set once it exists (the worker is made first). Held weakly: the
/// gateway's relay holds the worker.
#[derive(Default)]
pub(crate) struct LocalGateway {
    gateway: OnceLock<WeakGateway>,
}

impl LocalGateway {
    /// Makes `gateway` the one calls reach.
    pub(crate) fn set(&self, gateway: &Gateway) {
        let _ = self.gateway.set(gateway.downgrade());
    }

    fn get(&self, id: &str) -> Result<Gateway, Code> {
        self.gateway
            .get()
            .and_then(WeakGateway::upgrade)
            .filter(|gateway| gateway.node_id() == id)
            .ok_or(Code::UNAVAILABLE)
    }
}

impl Gateways for LocalGateway {
    fn bind(&self, gateway: &str, session: u64, user: u64) -> BoxFuture<Result<bool, Code>> {
        let bound = self.get(gateway).map(|gateway| gateway.bind(session, user));
        Box::pin(std::future::ready(bound))
    }

    fn kick(&self, gateway: &str, session: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        let kicked = self.get(gateway).map(|gateway| gateway.kick(session, reason));
        Box::pin(std::future::ready(kicked))
    }

    fn push(&self, gateway: &str, batch: PushBatch) -> BoxFuture<Result<PushReport, Code>> {
        let report = self
            .get(gateway)
            .map(|gateway| gateway.push(&batch.sessions, &batch.main, &batch.sub, batch.data));
        Box::pin(std::future::ready(report))
    }

    fn wills(&self, gateway: &str, wills: Wills) -> BoxFuture<Result<usize, Code>> {
        Box::pin(std::future::ready(self.get(gateway).map(|gateway| gateway.wills(wills))))
    }
}
