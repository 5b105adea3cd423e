//! The adapters that join a node's own gateway and worker in one process (`mortar dev`): the
//! runtime reaches the gateway through its [`Gateways`] trait and never names the gateway's types.

use crate::{
    gateway::{Gateway, WeakGateway},
    rpc::{PushBatch, PushReport},
    worker::gateways::Gateways,
};
use mortar::{Code, ctx::BoxFuture};
use std::sync::OnceLock;

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
}
