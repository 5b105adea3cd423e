//! What the node's operators do through a worker (the admin API): call any route as the system,
//! find a player, kick one, and the protos of every route the cluster serves.

use super::Worker;
use bytes::Bytes;
use mortar_abi::{
    Code, Failure,
    host::{Host as _, Invocation, Request, Session},
};
use mortar_backends::session::Location;
use mortar_telemetry::trace;
use std::{net::IpAddr, time::Instant};

impl Worker {
    /// Calls route `path` (client or internal, here or on the worker of the cluster serving it)
    /// with `body` as the system: no session, no user, `client` as the client IP. Completes by
    /// `deadline`.
    ///
    /// # Errors
    /// The callee's code and reason; `NO_ROUTE` when no worker serves the route, `TIMEOUT` past
    /// `deadline`.
    pub async fn call_as_system(
        &self,
        path: &str,
        body: Bytes,
        client: IpAddr,
        deadline: Instant,
    ) -> Result<Bytes, Failure> {
        let request = Request {
            session: Session { id: 0, user: None, ip: client, gateway: String::new() },
            route: "admin.call",
            seq: 0,
            trace_id: trace::new_trace_id(),
            depth: 0,
            deadline,
        };
        let ctx = Invocation::new(request, self.core.clone());
        self.core.call(&ctx, path, body).await
    }

    /// Where `user` is logged in, if anywhere.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store fails.
    pub async fn locate(&self, user: u64) -> Result<Option<Location>, Code> {
        Ok(self.core.players.locate(vec![user]).await?.into_iter().next().flatten())
    }

    /// Kicks `user` wherever they are logged in, with `reason`; false when they are not.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store or the player's gateway cannot be reached.
    pub async fn kick(&self, user: u64, reason: Code) -> Result<bool, Code> {
        self.core.players.kick(user, reason).await
    }

    /// The protos of this worker's routes and, in a cluster, of the other workers' (those that
    /// answer within `timeout`, connected first to those serving module `main`), as encoded
    /// `FileDescriptorSet`s.
    pub async fn cluster_descriptors(&self, main: &str, timeout: std::time::Duration) -> Vec<Bytes> {
        let mut sets = vec![self.core.routes.descriptors()];
        if let Some(workers) = &self.core.workers {
            workers.connect_for(main, Instant::now() + timeout).await;
            sets.extend(workers.descriptors(timeout).await.unwrap_or_default());
        }
        sets
    }
}
