//! A cluster gateway's workers: one connection per worker the registry lists, the live ones
//! among them, and the choice of a worker for each request. A worker keeps one pool of the other
//! workers too, for calls to modules it does not serve (`Ctx::call`).
//!
//! The pool follows the registry. A gateway's pool ([`Dialing::Always`]) runs a peer task for
//! each worker listed that, until the worker leaves the registry or the pool closes:
//! 1. dials the worker and takes its handshake (the worker's entry says what it serves);
//! 2. puts it in the live view, where requests find it;
//! 3. pings it every `rpc.ping_interval_ms`, and takes it out of the view when the connection
//!    closes, a ping is unanswered for `rpc.ping_timeout_ms` (frozen), or a request finds it gone
//!    or draining ([`WorkerPool::relay`] marks it down at once);
//! 4. waits (backoff from `rpc.backoff_min_ms`, doubling to `rpc.backoff_max_ms`, with jitter)
//!    and dials again.
//!
//! A worker's pool of the other workers ([`Dialing::OnDemand`]) dials none of them until a call
//! needs one: a call to module `m` starts a peer task for each worker that serves `m` (or may: one
//! whose modules are not known yet) and has no connection, and waits for the first to be live.
//! Such a task does steps 1–3 once and ends when the connection has carried no call for
//! `rpc.peer_idle_ms`, or went down; a worker whose dial failed is not dialled again before its
//! backoff has passed (calls for its modules answer `UNAVAILABLE` meanwhile). So workers whose
//! modules never call each other hold no connection between them.
//!
//! Taking a worker out of the view never cuts requests already sent to it: they finish, or get
//! `TIMEOUT` at their deadline, or `UNAVAILABLE` when its connection closes.

use super::rendezvous;
use crate::config::RpcConfig;
use crate::registry::{Change, NodeEntry, NodeKind, Registry};
use crate::rpc::{
    AgentMessage, Called, Handled, InternalCall, Logins, LoginsAnswer, Presence, Reply, Status,
    WorkerRpcClient,
    handshake::{self, Identity},
    stream::RelayStream,
};
use crate::suggest;
use bytes::Bytes;
use futures::FutureExt as _;
use mortar_abi::Code;
use mortar_telemetry::metrics as m;
use mortar_telemetry::trace;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tarpc::client::RpcError;
use tokio::{sync::Notify, task::JoinHandle};

/// How many workers one request tries when the first ones are draining.
const MAX_ATTEMPTS: usize = 3;

/// The gateway's workers; cheap to clone.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

/// What a pool tells of the number of live workers (see [`WorkerPool::start`]).
pub type OnLive = Box<dyn Fn(usize) + Send + Sync>;

/// When a pool connects to the workers it knows (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialing {
    /// To every worker listed, at once, and again whenever a connection is lost: a gateway's
    /// pool, since every client request needs a worker.
    Always,
    /// To a worker only when a call needs it, closing the connection after `rpc.peer_idle_ms`
    /// without a call: a worker's pool of the other workers.
    OnDemand,
}

struct Inner {
    me: Arc<Identity>,
    config: RpcConfig,
    /// Where workers are found; it learns each worker's own entry from its handshake.
    registry: Arc<dyn Registry>,
    /// The gateway's readiness, and that it reports `mortar_gateway_workers_live`; none for a
    /// worker's pool of the other workers.
    on_live: Option<OnLive>,
    dialing: Dialing,
    /// What requests choose from; replaced whole on every change, read per request.
    view: RwLock<Arc<Vec<Live>>>,
    /// Wakes the calls waiting for a connection (on demand) whenever the view changes or a dial
    /// ends.
    changed: Notify,
    peers: Mutex<HashMap<String, Peer>>,
    follower: Mutex<Option<JoinHandle<()>>>,
    /// The base of [`Live::used`].
    born: Instant,
    /// Told the id of each worker whose connection went down (see [`WorkerPool::on_down`]).
    on_down: std::sync::OnceLock<OnDown>,
}

/// What a pool tells of a worker whose connection went down (see [`WorkerPool::on_down`]).
pub type OnDown = Box<dyn Fn(&str) + Send + Sync>;

/// A worker the pool connects to.
struct Peer {
    entry: NodeEntry,
    /// The modules it served when last connected (its handshake); none before it ever was.
    served: Option<Arc<[String]>>,
    /// Its peer task: always one with [`Dialing::Always`]; on demand, one while a connection is
    /// being made or is up.
    task: Option<JoinHandle<()>>,
    /// On demand: dials that failed in a row, and when it may be dialled again after the last.
    failures: u32,
    retry_at: Option<Instant>,
    /// Wakes the peer task when a request found the worker gone.
    down: Arc<Down>,
    /// The connection now in the view, by generation.
    generation: Option<u64>,
}

/// A request's word to a peer task that the connection it used is gone or draining.
///
/// It carries the connection's generation: a word about an earlier connection (left as a permit
/// when it came while the task was not listening, e.g. as that connection closed by itself) must
/// not take down the next one the moment it is up.
#[derive(Default)]
struct Down {
    generation: AtomicU64,
    notify: Notify,
}

impl Down {
    /// Says that connection `generation` is gone.
    fn signal(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        self.notify.notify_one();
    }

    /// Completes once connection `generation` was said to be gone.
    async fn of(&self, generation: u64) {
        loop {
            let notified = self.notify.notified();
            if self.generation.load(Ordering::Acquire) == generation {
                return;
            }
            notified.await;
        }
    }
}

/// A client request on its way to a worker: the caller's own, borrowed (the gateway builds its
/// reply from its route; cloning its strings cost two allocations per request), or the one a
/// draining worker handed back.
enum Relayed<'a> {
    Caller(&'a AgentMessage),
    HandedBack(Box<AgentMessage>),
}

impl std::ops::Deref for Relayed<'_> {
    type Target = AgentMessage;

    fn deref(&self) -> &AgentMessage {
        match self {
            Self::Caller(msg) => msg,
            Self::HandedBack(msg) => msg,
        }
    }
}

/// What a worker did with a message the pool sent.
enum Sent<M> {
    Reply(Reply),
    /// It is draining and handed the message back.
    Draining(M),
}

/// A connected worker, as requests see it.
#[derive(Clone)]
struct Live {
    id: Arc<str>,
    hash: u64,
    weight: u32,
    /// The modules requests may choose it for: those it serves, but for a module that keeps
    /// documents which an earlier worker with another store serves (its data would split).
    modules: Arc<[String]>,
    /// All it serves, as its handshake says.
    serves: Arc<[String]>,
    /// The modules among them that keep documents, and where it keeps them.
    documents: Arc<[String]>,
    store: Arc<str>,
    started_at_ms: u64,
    online_hooks: Arc<[String]>,
    offline_hooks: Arc<[String]>,
    /// Its routes that are routed by a request field, as `main`, `sub` and the field's number.
    keyed: Arc<[(String, String, u32)]>,
    client: WorkerRpcClient,
    /// The same connection's relay stream, for client requests.
    stream: RelayStream,
    generation: u64,
    latency: metrics::Histogram,
    /// When a call last went to it, in ms since the pool was made (the idle close of an
    /// on-demand connection reads it).
    used: Arc<AtomicU64>,
}

impl Peer {
    /// Whether it serves module `main`, or may: it never connected and its registry entry does
    /// not say what it serves.
    fn may_serve(&self, main: &str) -> bool {
        match &self.served {
            Some(served) => served.iter().any(|module| module == main),
            None => self.entry.modules.is_empty() || self.entry.serves(main),
        }
    }
}

impl Live {
    /// Its modules with an `on_online` (or `on_offline`) hook.
    fn hooks(&self, status: Status) -> &[String] {
        match status {
            Status::Online => &self.online_hooks,
            Status::Offline => &self.offline_hooks,
        }
    }
}

impl WorkerPool {
    /// A pool for node `me`, following `registry` from now on, connecting as `dialing` says.
    /// `on_live` hears how many workers are live, now and at every change (a gateway's readiness
    /// and gauge follow it); a worker, whose pool only carries calls to modules it does not
    /// serve, passes none.
    pub fn start(
        me: Arc<Identity>,
        config: RpcConfig,
        registry: Arc<dyn Registry>,
        on_live: Option<OnLive>,
        dialing: Dialing,
    ) -> Self {
        if let Some(on_live) = &on_live {
            on_live(0);
        }
        let inner = Arc::new(Inner {
            me,
            config,
            registry: registry.clone(),
            on_live,
            dialing,
            view: RwLock::default(),
            changed: Notify::new(),
            peers: Mutex::default(),
            follower: Mutex::default(),
            born: Instant::now(),
            on_down: std::sync::OnceLock::new(),
        });
        let pool = Self { inner };
        let mut watcher = registry.watch();
        let follower = tokio::spawn({
            let pool = pool.clone();
            async move {
                while let Some(changes) = watcher.changed().await {
                    changes.into_iter().for_each(|change| pool.apply(change));
                    let nodes = registry.snapshot();
                    for kind in [NodeKind::Gateway, NodeKind::Worker] {
                        let count = nodes.values().filter(|node| node.kind == kind).count();
                        metrics::gauge!(m::REGISTRY_NODES, "kind" => kind.as_str()).set(count as f64);
                    }
                }
            }
        });
        *pool.inner.follower.lock().unwrap_or_else(PoisonError::into_inner) = Some(follower);
        pool
    }

    /// Stops following the registry and dialling workers. Requests in flight finish.
    pub fn close(&self) {
        if let Some(follower) = self.inner.follower.lock().unwrap_or_else(PoisonError::into_inner).take() {
            follower.abort();
        }
        let peers = std::mem::take(&mut *self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner));
        peers.into_values().filter_map(|peer| peer.task).for_each(|task| task.abort());
        self.rebuild();
    }

    /// Has `on_down` told the id of each worker whose connection goes down from now on (closed,
    /// unanswered pings, a request that found it gone or draining; not an idle close): a gateway
    /// sends the wills its sessions hold for that worker. Set once; later calls are ignored.
    pub fn on_down(&self, on_down: OnDown) {
        let _ = self.inner.on_down.set(on_down);
    }

    /// Workers connected now.
    pub fn live_count(&self) -> usize {
        self.view().len()
    }

    /// Completes once at least `count` workers are connected.
    pub async fn connected(&self, count: usize) {
        while self.live_count() < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Relays `msg` to a live worker serving its module, chosen by rendezvous hashing on the
    /// user id (the session id before login), with the deadline `timeout` from now.
    ///
    /// Completes when a worker replies or the deadline passes, so the client always gets one
    /// reply. A worker that answers "draining" did not run the request: it is marked down and
    /// the request goes to the next choice.
    ///
    /// # Errors
    /// None: failures are replies, with a reason for the client. `NO_ROUTE`: no worker the pool
    /// knows serves the module, and each one's modules are known (`no worker serves module
    /// "gret" (did you mean "greet"?)`); `UNAVAILABLE`: no worker is live, or none of those
    /// serving (or that may serve) the module, or the worker's connection failed (it is marked
    /// down at once); `TIMEOUT`: the deadline passed.
    pub async fn relay(&self, msg: &AgentMessage, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        let view = self.view();
        let key = route_key(&view, &msg.main, &msg.sub, &msg.data)
            .unwrap_or_else(|| msg.user.unwrap_or(msg.session));
        let (session, seq, trace_id) = (msg.session, msg.seq, msg.trace_id);
        let main: for<'m> fn(&'m Relayed<'_>) -> &'m str = |msg| &msg.main;
        let sent = self
            .attempt(view, main, key, trace_id, Relayed::Caller(msg), |worker, msg| {
                // Sent now; a draining worker hands the message back whole. A combinator, not
                // an async block: that would hold the answer's future twice.
                worker.stream.handle(&msg, deadline).map(|answer| {
                    Ok(match answer? {
                        Handled::Reply(reply) => Sent::Reply(reply),
                        Handled::Draining(msg) => Sent::Draining(Relayed::HandedBack(msg)),
                    })
                })
            })
            .await;
        match sent {
            Ok(reply) => {
                tracing::debug!(session, seq, trace = %trace::display(trace_id), code = %m::code_label(reply.code), "relayed");
                reply
            }
            Err(msg) => {
                tracing::debug!(main = %msg.main, session, "no live worker serves the module");
                self.unserved(&msg.main)
            }
        }
    }

    /// Runs internal call `call` on a live worker serving its module, chosen as
    /// [`WorkerPool::relay`] chooses (by user, else session), by `deadline`.
    ///
    /// # Errors
    /// None: failures are replies. `NO_ROUTE`: no worker in the registry serves the module;
    /// `UNAVAILABLE`: none of those is live, or the connection failed; `TIMEOUT`: the deadline
    /// passed.
    pub async fn call(&self, call: InternalCall, deadline: Instant) -> Reply {
        self.connect_for(&call.main, deadline).await;
        let view = self.view();
        let key = route_key(&view, &call.main, &call.sub, &call.data)
            .unwrap_or_else(|| call.user.unwrap_or(call.session));
        let trace_id = call.trace_id;
        let main: fn(&InternalCall) -> &str = |call| call.main.as_str();
        let sent = self
            .attempt(view, main, key, trace_id, call, |worker, call| {
                let client = worker.client.clone();
                let mut cx = tarpc::context::current();
                cx.deadline = deadline;
                cx.trace_context.trace_id = trace_id.into();
                async move {
                    Ok(match client.call(cx, call).await? {
                        Called::Reply(reply) => Sent::Reply(reply),
                        Called::Draining(call) => Sent::Draining(*call),
                    })
                }
            })
            .await;
        sent.unwrap_or_else(|call| {
            let registered = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match registered.values().any(|peer| peer.may_serve(&call.main)) {
                true => Reply::code(Code::UNAVAILABLE),
                false => Reply::code(Code::NO_ROUTE),
            }
        })
    }

    /// The reply to a request for module `main` that no live worker took: `UNAVAILABLE` while no
    /// worker is live, or while one that serves `main` or may serve it (a worker never connected
    /// whose registry entry does not say what it serves) is down or draining; otherwise
    /// `NO_ROUTE`, suggesting the closest module a known worker serves.
    fn unserved(&self, main: &str) -> Reply {
        let view = self.view();
        if view.is_empty() {
            return Reply::because(Code::UNAVAILABLE, "no worker is up; retry later");
        }
        let peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let live_serves = view.iter().any(|live| live.modules.iter().any(|module| module == main));
        if live_serves || peers.values().any(|peer| peer.may_serve(main)) {
            let reason = format!("no live worker serves module {main:?} now; retry later");
            return Reply::because(Code::UNAVAILABLE, reason);
        }
        let live = view.iter().flat_map(|live| live.modules.iter());
        let known = peers.values().filter_map(|peer| peer.served.as_deref()).flatten();
        let mut served: Vec<&str> = live.chain(known).map(String::as_str).collect();
        served.sort_unstable();
        served.dedup();
        Reply::because(Code::NO_ROUTE, suggest::no_module(main, served))
    }

    /// Tells the live workers that `presence.user` came online or went offline, so each module
    /// with an `on_online` (or `on_offline`) hook runs it once: for each such module one worker
    /// serving it is chosen by user, as requests are, and each chosen worker gets one message
    /// naming its modules. Completes when they have run or `timeout` passed; a failure is logged.
    pub async fn presence(&self, presence: Presence, timeout: Duration) {
        let view = self.view();
        let status = presence.status;
        let hooked: std::collections::BTreeSet<&String> =
            view.iter().flat_map(|live| live.hooks(status)).collect();
        let mut by_worker: HashMap<Arc<str>, (Live, Vec<String>)> = HashMap::new();
        for module in hooked {
            let serving = || view.iter().filter(|live| live.hooks(status).contains(module));
            let Some(winner) =
                rendezvous::pick(presence.user, serving().map(|live| (live.hash, live.weight)))
            else {
                continue;
            };
            if let Some(live) = serving().nth(winner) {
                by_worker
                    .entry(live.id.clone())
                    .or_insert_with(|| (live.clone(), Vec::new()))
                    .1
                    .push(module.to_owned());
            }
        }
        let deadline = Instant::now() + timeout;
        let sends = by_worker.into_values().map(|(live, modules)| {
            let mut cx = tarpc::context::current();
            cx.deadline = deadline;
            let presence = presence.clone();
            async move {
                let (user, status) = (presence.user, presence.status);
                if let Err(error) = live.client.presence(cx, presence, modules.clone()).await {
                    tracing::warn!(peer = %live.id, user, ?status, ?modules, %error, "presence hooks did not run");
                }
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Sends `msg` to the live worker for `key` among those serving `main` with `send` (which
    /// carries the deadline; `trace_id` labels the failures logged), up to [`MAX_ATTEMPTS`]
    /// workers when the first ones are draining. The first pick is from `view`, which the caller
    /// read for the request's key; later ones read the pool's view again. The message back when
    /// no live worker serves its module (`main` reads it from the message).
    async fn attempt<M, F, Fut>(
        &self,
        mut view: Arc<Vec<Live>>,
        main: fn(&M) -> &str,
        key: u64,
        trace_id: u128,
        mut msg: M,
        send: F,
    ) -> Result<Reply, M>
    where
        F: Fn(&Live, M) -> Fut,
        Fut: std::future::Future<Output = Result<Sent<M>, RpcError>>,
    {
        // Workers that handed this message back: the view drops them once their peer task
        // runs, which under load may be after the next attempt.
        let mut draining: Vec<Arc<str>> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let Some(worker) = pick(&view, main(&msg), key, &draining) else { return Err(msg) };
            let started = Instant::now();
            if self.inner.dialing == Dialing::OnDemand {
                worker.used.store(self.since_born(started), Ordering::Relaxed);
            }
            let result = send(worker, msg).await;
            worker.latency.record(started.elapsed());
            match result {
                Ok(Sent::Reply(reply)) => return Ok(reply),
                Ok(Sent::Draining(unhandled)) => {
                    self.mark_down(worker, "draining");
                    draining.push(worker.id.clone());
                    msg = unhandled;
                    view = self.view();
                }
                Err(error) => {
                    let reply = reply_of(&error);
                    let code = Code::from_wire(reply.code);
                    if code == Code::UNAVAILABLE {
                        self.mark_down(worker, "call failed");
                    }
                    metrics::counter!(m::RPC_ERRORS, "peer" => worker.id.to_string(), "code" => m::code_label(code.get()))
                        .increment(1);
                    // tarpc's errors keep their detail (a full backlog, …) as their source.
                    let cause =
                        std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
                    tracing::warn!(peer = %worker.id, trace = %trace::display(trace_id), %error, cause, ?code, "call to worker failed");
                    return Ok(reply);
                }
            }
        }
        Err(msg)
    }

    /// The descriptor sets of the live workers, one per distinct set of modules served (workers
    /// serving the same modules serve the same protos), asked at once with the deadline `timeout`.
    ///
    /// # Errors
    /// `UNAVAILABLE` when no worker is live or none answered in time.
    pub async fn descriptors(&self, timeout: Duration) -> Result<Vec<Bytes>, Code> {
        let view = self.view();
        let mut seen = std::collections::HashSet::new();
        let asks = view.iter().filter(|live| seen.insert(live.modules.clone())).map(|live| {
            let mut cx = tarpc::context::current();
            cx.deadline = Instant::now() + timeout;
            live.client.descriptors(cx)
        });
        let sets: Vec<Bytes> =
            futures::future::join_all(asks).await.into_iter().filter_map(Result::ok).collect();
        if sets.is_empty() { Err(Code::UNAVAILABLE) } else { Ok(sets) }
    }

    /// Has a live worker change the cluster's logins as `change` says (the runtime is the session
    /// store's one writer), trying another worker when one cannot be reached, by `timeout`.
    ///
    /// # Errors
    /// The worker's code (`UNAVAILABLE` when its session store cannot be reached); `UNAVAILABLE`
    /// or `TIMEOUT` when no worker answered.
    pub async fn logins(&self, change: Logins, timeout: Duration) -> Result<LoginsAnswer, Code> {
        let view = self.view();
        // Spread by player over the live workers; any of them reaches the one store.
        let start = match &change {
            Logins::Ended { user, .. } | Logins::Restore { user, .. } => *user as usize % view.len().max(1),
            Logins::Purge { .. } | Logins::Generation => 0,
        };
        let deadline = Instant::now() + timeout;
        let mut failed = Code::UNAVAILABLE;
        for live in view.iter().cycle().skip(start).take(view.len().min(2)) {
            let mut cx = tarpc::context::current();
            cx.deadline = deadline;
            match live.client.logins(cx, change.clone()).await {
                Ok(answer) => return answer.map_err(Code::from_wire),
                Err(error) => {
                    tracing::debug!(worker = %live.id, %error, "cannot change logins through this worker");
                    failed = code_of(&error);
                }
            }
        }
        Err(failed)
    }

    /// On demand: starts connections to the workers that serve (or may serve) module `main` and
    /// have none, and waits until one of them is live, they all failed, or `deadline`. At once
    /// with [`Dialing::Always`].
    pub async fn connect_for(&self, main: &str, deadline: Instant) {
        if self.inner.dialing == Dialing::Always {
            return;
        }
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let dialing = self.dial_for(main);
            if !dialing || self.view().iter().any(|live| live.modules.iter().any(|m| m == main)) {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return;
            }
        }
    }

    /// Whether this worker owns `key` among all the live workers serving `main`, itself included:
    /// where a call to a route of `main` routed by a request field (see
    /// [`KeyedRoute`](crate::registry::KeyedRoute)) runs, so that it reaches the worker a gateway
    /// relays the same key to. On demand, first connects to every worker that may serve `main`
    /// (waiting, by `deadline`, for the dials under way to end), since the owner may be any of
    /// them.
    pub async fn owns(&self, main: &str, key: u64, deadline: Instant) -> bool {
        if self.inner.dialing == Dialing::OnDemand {
            loop {
                let changed = self.inner.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                self.dial_for(main);
                let dialing = {
                    let peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
                    peers
                        .values()
                        .any(|peer| peer.may_serve(main) && peer.task.is_some() && peer.generation.is_none())
                };
                if !dialing || tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                    break;
                }
            }
        }
        let view = self.view();
        let me = &self.inner.me.entry;
        let serving = view.iter().filter(|live| live.modules.iter().any(|m| m == main));
        let candidates = serving.map(|live| (live.hash, live.weight));
        let mine = (rendezvous::node_hash(&me.id), me.weight.max(1));
        // I am the last candidate: I win unless another scores higher.
        let count = view.iter().filter(|live| live.modules.iter().any(|m| m == main)).count();
        rendezvous::pick(key, candidates.chain([mine])) == Some(count)
    }

    /// Starts a peer task for each worker that may serve `main`, has none, and is not waiting
    /// out its backoff; whether any such worker is being dialled or connected now.
    fn dial_for(&self, main: &str) -> bool {
        let now = Instant::now();
        let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dialing = false;
        for peer in peers.values_mut().filter(|peer| peer.may_serve(main)) {
            if peer.task.is_some() {
                dialing = true;
            } else if peer.retry_at.is_none_or(|at| at <= now) {
                peer.task = Some(tokio::spawn(self.clone().run_peer(peer.entry.clone(), peer.down.clone())));
                dialing = true;
            }
        }
        dialing
    }

    /// An on-demand peer task's end: forgets the task (if the peer still has this one) and, when
    /// its dial failed, when it may be dialled again; wakes the calls waiting.
    fn ended(&self, id: &str, dial_failed: bool) {
        {
            let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(peer) = peers.get_mut(id)
                && peer.task.as_ref().map(JoinHandle::id) == tokio::task::try_id()
            {
                peer.task = None;
                if dial_failed {
                    let config = &self.inner.config;
                    let backoff = config.backoff_min().saturating_mul(1 << peer.failures.min(16));
                    peer.failures += 1;
                    peer.retry_at = Some(Instant::now() + backoff.min(config.backoff_max()));
                } else {
                    (peer.failures, peer.retry_at) = (0, None);
                }
            }
        }
        self.inner.changed.notify_waiters();
    }

    /// `at` in ms since the pool was made.
    fn since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.born).as_millis()).unwrap_or(u64::MAX)
    }

    fn view(&self) -> Arc<Vec<Live>> {
        self.inner.view.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes `worker`'s connection out of the view (see [`WorkerPool::take_out`]) and logs why.
    fn mark_down(&self, worker: &Live, reason: &'static str) {
        if self.take_out(&worker.id, worker.generation) {
            tracing::warn!(peer = %worker.id, reason, "worker marked down");
        }
    }

    /// Takes connection `generation` of worker `id` out of the view before returning, so the
    /// next pick of any request no longer finds it, and wakes its peer task, which closes it and
    /// dials again. False when that connection had been replaced or taken out already.
    fn take_out(&self, id: &str, generation: u64) -> bool {
        {
            let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.get_mut(id) {
                Some(peer) if peer.generation == Some(generation) => {
                    peer.generation = None;
                    peer.down.signal(generation);
                }
                _ => return false,
            }
        }
        self.rebuild();
        true
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Added(entry) | Change::Updated(entry) => {
                if entry.kind != NodeKind::Worker || entry.id == self.inner.me.entry.id {
                    return;
                }
                let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(peer) = peers.get_mut(&entry.id)
                    && peer.entry.addr == entry.addr
                {
                    // Same worker, same address: its connection stays (what it serves comes from
                    // its handshake); a richer entry tells on-demand dialling what it may serve.
                    peer.entry = entry;
                    return;
                }
                let down = Arc::new(Down::default());
                let task = match self.inner.dialing {
                    Dialing::Always => Some(tokio::spawn(self.clone().run_peer(entry.clone(), down.clone()))),
                    Dialing::OnDemand => {
                        if entry.store.is_empty() {
                            // Known second-hand (a static list, a gateway's hello): shake hands
                            // once so both learn what the other serves and where it keeps its
                            // documents, which the start-time check against split stores needs.
                            tokio::spawn(self.clone().meet(entry.clone()));
                        }
                        None
                    }
                };
                let peer =
                    Peer { entry, served: None, task, failures: 0, retry_at: None, down, generation: None };
                if let Some(task) = peers.insert(peer.entry.id.clone(), peer).and_then(|old| old.task) {
                    task.abort();
                }
            }
            Change::Removed(id) => {
                let removed = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                if let Some(peer) = removed {
                    tracing::info!(peer = %id, "worker left the registry");
                    if let Some(task) = peer.task {
                        task.abort();
                    }
                }
            }
        }
        self.rebuild();
    }

    /// On demand: dials worker `entry` for its handshake only (learning its own entry, and it
    /// this node's), then closes the connection; tries three times, with backoff.
    async fn meet(self, entry: NodeEntry) {
        let config = &self.inner.config;
        let mut backoff = config.backoff_min();
        for _ in 0..3 {
            let known = self.inner.registry.snapshot().into_values().collect();
            match handshake::dial(&entry.addr, &entry.id, &self.inner.me, known, config).await {
                Ok((worker, _frames)) => {
                    tracing::debug!(peer = %entry.id, "met worker: handshake only");
                    return self.inner.registry.learn(worker, true);
                }
                Err(error) => tracing::debug!(peer = %entry.id, %error, "cannot meet worker yet"),
            }
            tokio::time::sleep(mortar_backends::jitter::jitter(backoff, 0.25)).await;
            backoff = (backoff * 2).min(config.backoff_max());
        }
    }

    /// One worker's connection, again and again; on demand, once (see the module docs).
    async fn run_peer(self, entry: NodeEntry, down: Arc<Down>) {
        let config = &self.inner.config;
        let on_demand = self.inner.dialing == Dialing::OnDemand;
        let mut backoff = config.backoff_min();
        let mut failing = false;
        let mut generation = 0u64;
        loop {
            let known = self.inner.registry.snapshot().into_values().collect();
            match handshake::dial(&entry.addr, &entry.id, &self.inner.me, known, config).await {
                Ok((worker, frames)) => {
                    self.inner.registry.learn(worker.clone(), true);
                    failing = false;
                    backoff = config.backoff_min();
                    generation += 1;
                    let mut client_config = tarpc::client::Config::default();
                    // Each session bounds its own in-flight requests; the client need not queue on top.
                    client_config.max_in_flight_requests = usize::MAX;
                    client_config.pending_request_buffer = 1024;
                    let (stream, tarpc, driver) = RelayStream::connect(frames, config.max_queued_bytes);
                    let new = WorkerRpcClient::new(client_config, tarpc);
                    tokio::spawn(new.dispatch);
                    // The connection outlives its time in the view: requests already sent on it
                    // finish (or time out) after the worker is marked down. It leaves the view
                    // the moment it ends, before the peer task runs: no request is sent to a
                    // closed connection in between.
                    let mut dispatch = tokio::spawn({
                        let (pool, id) = (self.clone(), entry.id.clone());
                        async move {
                            driver.await;
                            pool.take_out(&id, generation);
                        }
                    });
                    let client = new.client;
                    if on_demand {
                        tracing::debug!(peer = %entry.id, addr = %entry.addr, modules = ?worker.modules, "worker connected for a call");
                    } else {
                        tracing::info!(peer = %entry.id, addr = %entry.addr, modules = ?worker.modules, "worker up");
                    }
                    let used = Arc::new(AtomicU64::new(self.since_born(Instant::now())));
                    self.set_live(
                        &entry.id,
                        generation,
                        Live {
                            id: entry.id.as_str().into(),
                            hash: rendezvous::node_hash(&entry.id),
                            weight: worker.weight.max(1),
                            modules: worker.modules.clone().into(),
                            serves: worker.modules.into(),
                            documents: worker.documents.into(),
                            store: worker.store.into(),
                            started_at_ms: worker.started_at_ms,
                            online_hooks: worker.online_hooks.into(),
                            offline_hooks: worker.offline_hooks.into(),
                            keyed: worker
                                .keyed
                                .into_iter()
                                .filter_map(|keyed| {
                                    let (main, sub) = keyed.route.split_once('.')?;
                                    Some((main.to_owned(), sub.to_owned(), keyed.field))
                                })
                                .collect(),
                            client: client.clone(),
                            stream,
                            generation,
                            latency: metrics::histogram!(m::RPC_DURATION, "peer" => entry.id.clone()),
                            used: used.clone(),
                        },
                    );
                    let reason = tokio::select! {
                        _ = &mut dispatch => "connection closed",
                        reason = ping(&client, config) => reason,
                        () = down.of(generation) => "a request found it gone or draining",
                        () = self.idle(&used), if on_demand => "idle",
                    };
                    self.clear_live(&entry.id, generation);
                    if reason == "idle" {
                        tracing::debug!(peer = %entry.id, idle_ms = config.peer_idle_ms, "no call for a while: connection closed");
                    } else {
                        tracing::warn!(peer = %entry.id, reason, "worker down");
                        if let Some(on_down) = self.inner.on_down.get() {
                            on_down(&entry.id);
                        }
                    }
                    if on_demand {
                        return self.ended(&entry.id, false);
                    }
                }
                Err(error @ handshake::DialError::Refused { .. }) => {
                    failing = true;
                    tracing::error!(peer = %entry.id, %error, "worker refused this node; retrying with backoff");
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(peer = %entry.id, %error, "cannot reach worker; retrying with backoff");
                }
                Err(error) => tracing::debug!(peer = %entry.id, %error, "cannot reach worker"),
            }
            if on_demand {
                return self.ended(&entry.id, true);
            }
            // Up to a quarter more, so gateways that lost one worker do not redial in step.
            tokio::time::sleep(mortar_backends::jitter::jitter(backoff, 0.25)).await;
            backoff = (backoff * 2).min(config.backoff_max());
        }
    }

    /// Completes once the connection whose last call is in `used` has carried none for
    /// `rpc.peer_idle_ms`.
    async fn idle(&self, used: &AtomicU64) {
        let idle = self.inner.config.peer_idle();
        loop {
            let last = self.inner.born + Duration::from_millis(used.load(Ordering::Relaxed));
            let until = last + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until.into()).await;
        }
    }

    fn set_live(&self, id: &str, generation: u64, live: Live) {
        {
            let mut peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(peer) = peers.get_mut(id) else { return };
            peer.generation = Some(generation);
            peer.served = Some(live.modules.clone());
            let mut view = self.inner.view.write().unwrap_or_else(PoisonError::into_inner);
            let mut next: Vec<Live> = view.iter().filter(|l| &*l.id != id).cloned().collect();
            next.push(live);
            *view = Arc::new(next);
        }
        self.rebuild();
    }

    fn clear_live(&self, id: &str, generation: u64) {
        if let Some(peer) = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner).get_mut(id)
            && peer.generation == Some(generation)
        {
            peer.generation = None;
        }
        self.rebuild();
    }

    /// Makes the view hold exactly the peers with a live connection, each chosen only for the
    /// modules it may serve (see [`eligible`]).
    fn rebuild(&self) {
        let peers = self.inner.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut view = self.inner.view.write().unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<Live> = view
            .iter()
            .filter(|live| peers.get(&*live.id).is_some_and(|peer| peer.generation == Some(live.generation)))
            .cloned()
            .collect();
        let modules: Vec<Arc<[String]>> = next.iter().map(|live| eligible(live, &next)).collect();
        for (live, modules) in next.iter_mut().zip(modules) {
            live.modules = modules;
        }
        if let Some(on_live) = &self.inner.on_live {
            on_live(next.len());
        }
        *view = Arc::new(next);
        self.inner.changed.notify_waiters();
    }
}

/// The modules of `live` requests may choose it for among the workers of `view`: all it serves
/// but those that keep documents and that a worker with another store, started before it, serves
/// too. Two embedded stores would each hold part of the module's players; that worker refuses to
/// serve such a module once it learns of the earlier one, and until then requests go to the
/// earlier one only.
fn eligible(live: &Live, view: &[Live]) -> Arc<[String]> {
    let loses = |module: &String| {
        live.documents.contains(module)
            && view.iter().any(|other| {
                other.id != live.id
                    && other.store != live.store
                    && other.documents.contains(module)
                    && (other.started_at_ms, &*other.id) < (live.started_at_ms, &*live.id)
            })
    };
    if !live.serves.iter().any(loses) {
        return live.serves.clone();
    }
    live.serves.iter().filter(|module| !loses(module)).cloned().collect()
}

/// The rendezvous key of a request for a route routed by a request field (see
/// [`KeyedRoute`](crate::registry::KeyedRoute)): the field's value read from the encoded
/// request, as the live workers of `view` serving the module declare it. `None` for other routes
/// (they go by player), and for a body that does not parse (the worker answers it `BAD_REQUEST`).
fn route_key(view: &[Live], main: &str, sub: &str, data: &[u8]) -> Option<u64> {
    let field = view.iter().filter(|live| !live.keyed.is_empty()).find_map(|live| {
        live.keyed.iter().find_map(|(m, s, field)| (m == main && s == sub).then_some(*field))
    })?;
    rendezvous::field_key(data, field)
}

/// The live worker of `view` for `key` among those serving `main`, but for those in `skip`.
fn pick<'v>(view: &'v [Live], main: &str, key: u64, skip: &[Arc<str>]) -> Option<&'v Live> {
    let serving =
        || view.iter().filter(|live| !skip.contains(&live.id) && live.modules.iter().any(|m| m == main));
    let winner = rendezvous::pick(key, serving().map(|live| (live.hash, live.weight)))?;
    serving().nth(winner)
}

/// Pings until a ping fails; says how.
async fn ping(client: &WorkerRpcClient, config: &RpcConfig) -> &'static str {
    loop {
        tokio::time::sleep(config.ping_interval()).await;
        let mut cx = tarpc::context::current();
        cx.deadline = Instant::now() + config.ping_timeout();
        match client.ping(cx).await {
            Ok(()) => {}
            Err(RpcError::DeadlineExceeded) => return "ping unanswered (frozen or overloaded)",
            Err(_) => return "ping failed",
        }
    }
}

/// The reason of a `TIMEOUT` reply: the request passed its deadline.
pub const TIMED_OUT: &str = "no reply within the request timeout";

/// The reason of an `UNAVAILABLE` reply from a worker that shuts down and did not run the request.
pub const SHUTTING_DOWN: &str = "the worker is shutting down; retry";

/// The reply to a request whose call failed with `error`: its code (see [`code_of`]), with a
/// reason when the client can act on it (`TIMEOUT`, `UNAVAILABLE`; an `INTERNAL` has none).
pub fn reply_of(error: &RpcError) -> Reply {
    match code_of(error) {
        Code::TIMEOUT => Reply::because(Code::TIMEOUT, TIMED_OUT),
        Code::UNAVAILABLE => Reply::because(Code::UNAVAILABLE, "the worker cannot be reached; retry"),
        code => Reply::code(code),
    }
}

/// The reply code of a failed call.
pub fn code_of(error: &RpcError) -> Code {
    match error {
        RpcError::DeadlineExceeded => Code::TIMEOUT,
        RpcError::Server(server) if server.kind == std::io::ErrorKind::TimedOut => Code::TIMEOUT,
        RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_) => Code::UNAVAILABLE,
        RpcError::Server(_) => Code::INTERNAL,
    }
}
