//! The gateway's way to a worker: the node's own worker called in-process, one worker's tarpc
//! service, or the cluster's workers chosen per request; a deadline on every request either way,
//! failures turned into codes.

use bytes::Bytes;
use mortar_abi::{Code, future::BoxFuture};
use mortar_cluster::rpc::workers::{self, WorkerPool, code_of};
use mortar_cluster::rpc::{
    AgentMessage, Handled, Logins, LoginsAnswer, Presence, Reply, Status, WorkerRpcClient,
};
use mortar_telemetry::metrics as m;
use mortar_telemetry::trace;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// The node's own worker, as its gateway calls it in-process (`mortar dev`): the node joins the
/// two through this, so the gateway names no type of the runtime.
pub trait Upstream: Send + Sync + 'static {
    /// Handles one client request, whose client waits until `deadline`; always answers.
    fn handle(&self, msg: AgentMessage, deadline: Instant) -> BoxFuture<Reply>;
    /// Runs the hooks of `presence.status` of the modules that have one, by `deadline`.
    fn presence(&self, presence: Presence, deadline: Instant) -> BoxFuture<()>;
    /// Changes the logins in the session store, which the worker side alone writes (see
    /// [`Logins`]).
    fn logins(&self, change: Logins) -> BoxFuture<Result<LoginsAnswer, Code>>;
    /// The protos of the routes it serves, as one encoded `FileDescriptorSet`.
    fn descriptors(&self) -> Bytes;
}

/// Relays client requests to a worker. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    target: Target,
    timeout: Duration,
}

#[derive(Clone)]
enum Target {
    /// This node's own worker: handlers run on the session's task, no RPC.
    Local(Arc<dyn Upstream>),
    /// A worker's tarpc service (a remote node, or this node's worker through an in-process
    /// channel), with the call latency recorded by peer, and its modules with `on_online` and
    /// `on_offline` hooks.
    Rpc { worker: WorkerRpcClient, peer: String, latency: metrics::Histogram, hooks: [Vec<String>; 2] },
    /// The cluster's workers, one chosen per request.
    Cluster(WorkerPool),
}

impl Relay {
    /// Relays to `worker` in this process: the handler runs on the calling session's task, as
    /// Pitaya handles a frontend server's own routes, without a task hand-off or a serialisation.
    /// Each request gets `timeout` to complete.
    pub fn local(worker: Arc<dyn Upstream>, timeout: Duration) -> Self {
        Self { target: Target::Local(worker), timeout }
    }

    /// Relays over the tarpc client `worker` (the node `peer`, whose modules `hooks` have an
    /// `on_online` and an `on_offline` hook, in that order), giving each call `timeout` to
    /// complete.
    pub fn rpc(worker: WorkerRpcClient, peer: String, hooks: [Vec<String>; 2], timeout: Duration) -> Self {
        let latency = metrics::histogram!(m::RPC_DURATION, "peer" => peer.clone());
        Self { target: Target::Rpc { worker, peer, latency, hooks }, timeout }
    }

    /// Relays to the live workers of `pool`, choosing one per request (see
    /// [`WorkerPool::relay`]), giving each request `timeout` to complete.
    pub fn cluster(pool: WorkerPool, timeout: Duration) -> Self {
        Self { target: Target::Cluster(pool), timeout }
    }

    /// This node's own worker, when requests go to it in-process: a session runs the handler's
    /// future itself and keeps its deadline (see [`Relay::timeout`]) rather than through
    /// [`Relay::relay`].
    pub fn own_worker(&self) -> Option<&Arc<dyn Upstream>> {
        match &self.target {
            Target::Local(worker) => Some(worker),
            Target::Rpc { .. } | Target::Cluster(_) => None,
        }
    }

    /// How long a client waits for the reply to a request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Relays `msg` to the worker, borrowed: the caller keeps it (its route is the reply's), and a
    /// worker over TCP copies it straight into the connection's write buffer. This node's own
    /// worker and a tarpc client take a clone (reference counts, no copy of its strings or body).
    ///
    /// Completes when the worker replies or the deadline passes, whichever comes first, so the
    /// client always receives exactly one reply. Dropping the future cancels the request (the
    /// gateway does not: it lets started requests finish even when their client has left).
    ///
    /// # Errors
    /// None: failures are replies with `TIMEOUT` (deadline passed), `UNAVAILABLE` (the worker is
    /// gone) or `INTERNAL`, the first two with a reason that says so.
    pub async fn relay(&self, msg: &AgentMessage) -> Reply {
        let (session, seq, trace_id) = (msg.session, msg.seq, msg.trace_id);
        match &self.target {
            Target::Cluster(pool) => pool.relay(msg, self.timeout).await,
            Target::Local(worker) => {
                let deadline = Instant::now() + self.timeout;
                match tokio::time::timeout_at(deadline.into(), worker.handle(msg.clone(), deadline)).await {
                    Ok(reply) => {
                        tracing::debug!(session, seq, trace = %trace::display(trace_id), code = %m::code_label(reply.code), "relayed");
                        reply
                    }
                    Err(_) => {
                        tracing::warn!(session, seq, trace = %trace::display(trace_id), "request timed out");
                        Reply::because(Code::TIMEOUT, workers::TIMED_OUT)
                    }
                }
            }
            Target::Rpc { worker, peer, latency, .. } => {
                let started = Instant::now();
                let mut cx = tarpc::context::current();
                cx.deadline = started + self.timeout;
                cx.trace_context.trace_id = trace_id.into();
                // Boxed: tarpc's call future is about 4 KiB, and every request's future would
                // be that large for it (a session boxes one per request).
                let result = Box::pin(worker.handle(cx, msg.clone())).await;
                latency.record(started.elapsed());
                match result {
                    Ok(Handled::Reply(reply)) => {
                        tracing::debug!(%peer, session, seq, trace = %trace::display(trace_id), code = %m::code_label(reply.code), "relayed");
                        reply
                    }
                    Ok(Handled::Draining(_)) => Reply::because(Code::UNAVAILABLE, workers::SHUTTING_DOWN),
                    Err(error) => {
                        let reply = workers::reply_of(&error);
                        let code = Code::from_wire(reply.code);
                        metrics::counter!(m::RPC_ERRORS, "peer" => peer.clone(), "code" => m::code_label(code.get()))
                            .increment(1);
                        tracing::warn!(%peer, session, seq, trace = %trace::display(trace_id), %error, ?code, "relay to worker failed");
                        reply
                    }
                }
            }
        }
    }

    /// Runs the `on_online` or `on_offline` hooks of the modules behind this relay for a player
    /// who came online or went offline, each module's once (see [`WorkerPool::presence`]), each
    /// by the request timeout. Failures are logged.
    pub async fn presence(&self, presence: Presence) {
        let deadline = Instant::now() + self.timeout;
        match &self.target {
            Target::Local(worker) => worker.presence(presence, deadline).await,
            Target::Rpc { worker, peer, hooks, .. } => {
                let hooks = &hooks[usize::from(presence.status == Status::Offline)];
                if hooks.is_empty() {
                    return;
                }
                let mut cx = tarpc::context::current();
                cx.deadline = deadline;
                let (user, status) = (presence.user, presence.status);
                if let Err(error) = worker.presence(cx, presence, hooks.clone()).await {
                    tracing::warn!(%peer, user, ?status, %error, "presence hooks did not run");
                }
            }
            Target::Cluster(pool) => pool.presence(presence, self.timeout).await,
        }
    }

    /// Has the workers behind this relay change the logins in the session store (they are its one
    /// writer): a session ended, a login restored, this gateway's previous run purged.
    ///
    /// # Errors
    /// The worker's code (`UNAVAILABLE` when the store cannot be reached); `UNAVAILABLE` or
    /// `TIMEOUT` when no worker answered by the request timeout.
    pub async fn logins(&self, change: Logins) -> Result<LoginsAnswer, Code> {
        match &self.target {
            Target::Local(worker) => worker.logins(change).await,
            Target::Rpc { worker, .. } => {
                let mut cx = tarpc::context::current();
                cx.deadline = Instant::now() + self.timeout;
                worker.logins(cx, change).await.map_err(|error| code_of(&error))?.map_err(Code::from_wire)
            }
            Target::Cluster(pool) => pool.logins(change, self.timeout).await,
        }
    }

    /// The protos of the routes the workers behind this relay serve, merged into one encoded
    /// `FileDescriptorSet` (a file several workers serve appears once).
    ///
    /// # Errors
    /// `TIMEOUT` past the request deadline; `UNAVAILABLE` when no worker answered.
    pub async fn descriptors(&self) -> Result<Bytes, Code> {
        let sets = match &self.target {
            Target::Local(worker) => return Ok(worker.descriptors()),
            Target::Rpc { worker, .. } => {
                let mut cx = tarpc::context::current();
                cx.deadline = Instant::now() + self.timeout;
                vec![worker.descriptors(cx).await.map_err(|error| code_of(&error))?]
            }
            Target::Cluster(pool) => pool.descriptors(self.timeout).await?,
        };
        Ok(mortar_pb::merge_descriptor_sets(&sets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_cluster::{
        config::RpcConfig,
        registry::{NodeEntry, NodeKind, memory::MemoryRegistry},
        rpc::{handshake::Identity, workers::Dialing},
    };

    /// Answers nothing: the test only builds its futures.
    struct Nowhere;

    impl Upstream for Nowhere {
        fn handle(&self, _: AgentMessage, _: Instant) -> BoxFuture<Reply> {
            Box::pin(std::future::pending())
        }
        fn presence(&self, _: Presence, _: Instant) -> BoxFuture<()> {
            Box::pin(std::future::ready(()))
        }
        fn logins(&self, _: Logins) -> BoxFuture<Result<LoginsAnswer, Code>> {
            Box::pin(std::future::ready(Err(Code::UNAVAILABLE)))
        }
        fn descriptors(&self) -> Bytes {
            Bytes::new()
        }
    }

    fn message() -> AgentMessage {
        AgentMessage {
            main: "echo".into(),
            sub: "say".into(),
            seq: 1,
            data: Bytes::new(),
            session: 1,
            user: None,
            client_ip: [127, 0, 0, 1].into(),
            gateway: "gateway-1".into(),
            trace_id: 1,
        }
    }

    /// A session boxes one relay future per request: one of several KiB was a large allocation
    /// per request (the allocator's slow path, and as many cache lines touched).
    #[tokio::test]
    async fn a_relayed_request_boxes_less_than_a_kib() {
        let entry = NodeEntry::new("gateway-1", NodeKind::Gateway, "127.0.0.1:1");
        let me = Arc::new(Identity { cluster: "c".into(), secret: "s".into(), entry });
        let pool = WorkerPool::start(
            me,
            RpcConfig::default(),
            Arc::new(MemoryRegistry::default()),
            None,
            Dialing::Always,
        );
        let timeout = Duration::from_secs(1);
        for (target, relay) in
            [("cluster", Relay::cluster(pool, timeout)), ("local", Relay::local(Arc::new(Nowhere), timeout))]
        {
            // What a session boxes per relayed request (see `Agent::request`).
            let msg = message();
            let request = async move {
                let reply = relay.relay(&msg).await;
                (msg.main, msg.sub, reply)
            };
            let size = std::mem::size_of_val(&request);
            eprintln!("{target}: {size} bytes");
            assert!(size < 1024, "{target}: {size} bytes");
        }
    }
}
