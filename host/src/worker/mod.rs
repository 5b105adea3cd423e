//! The worker: runs module handlers for requests relayed by gateways.
//!
//! Layout:
//! - [`routes`]: the route table built from the linked modules, the loaded libraries and the
//!   enabled modules, each route checked against its rpc.
//! - [`library`]: the dynamic-module loader (the one place with `unsafe` code).
//! - this file: [`Worker`], which dispatches a request to its handler (the SDK's glue catches
//!   its panics and reports them through [`Host::panicked`]), serves
//!   the [`WorkerRpc`] tarpc service, and runs internal calls between modules.

pub mod gateways;
pub mod library;
mod players;
pub mod routes;

use crate::session::SessionStore;
use crate::{
    metrics as m,
    rpc::{AgentMessage, Handled, Reply, WorkerRpc, WorkerRpcRequest, WorkerRpcResponse},
    trace,
};
use bytes::Bytes;
use futures::StreamExt as _;
use gateways::Gateways;
use mortar::{
    Code, Ctx, Session,
    cache::CacheBackend,
    ctx::{BoxFuture, Host, PanicSite, Pushed, Request},
    module::ModuleError,
    store::StoreBackend,
};
use routes::{Origin, RouteTable};
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};
use tarpc::server::{BaseChannel, Channel as _};
use tracing::Instrument as _;

/// How deep internal calls may nest before the innermost is refused with `INTERNAL`.
pub const MAX_CALL_DEPTH: u8 = 16;

/// A module failed to start.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}`{} failed to start: {source}", match .origin { Origin::Linked => String::new(), Origin::Library(path) => format!(" (from {})", path.display()) })]
pub struct StartError {
    /// The module's name.
    pub module: &'static str,
    /// Where it comes from.
    pub origin: Origin,
    /// What it said.
    #[source]
    pub source: ModuleError,
}

/// What a worker gives its modules besides their routes.
pub struct Backends {
    /// The document store (`Ctx::store`).
    pub store: Arc<dyn StoreBackend>,
    /// The cache (`Ctx::cache`).
    pub cache: Arc<dyn CacheBackend>,
    /// Where logged-in players are (`Ctx::bind_user`, `Ctx::push`, …).
    pub sessions: Arc<dyn SessionStore>,
    /// The way to the gateways holding players' sessions; set by the node (its own gateway in
    /// `mortar dev`, the cluster's through the registry).
    pub gateways: Arc<dyn Gateways>,
}

impl Backends {
    /// No store (every store call is `UNAVAILABLE`), a small memory cache, a memory session store
    /// and no gateway: for tests and benches of the request path.
    pub fn none() -> Self {
        Self {
            store: Arc::new(crate::storage::NoStore),
            cache: Arc::new(crate::cache::memory::MemoryCache::new(10_000)),
            sessions: Arc::new(crate::session::memory::MemorySessions::default()),
            gateways: Arc::new(gateways::NoGateways),
        }
    }

    /// The store, cache and session store `config` names, and no gateway yet.
    ///
    /// # Errors
    /// When one cannot be opened.
    pub async fn open(config: &crate::NodeConfig) -> Result<Self, crate::node::NodeError> {
        let store = crate::storage::open(&config.storage).await?;
        let cache = crate::cache::open(config).await?;
        let sessions = crate::session::open(config).await?;
        Ok(Self { store, cache, sessions, gateways: Arc::new(gateways::NoGateways) })
    }
}

/// The module-running side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    core: Arc<Core>,
}

struct Core {
    node_id: String,
    routes: RouteTable,
    /// Set when the node begins to shut down: relayed requests are handed back unhandled.
    draining: AtomicBool,
    /// Relayed requests running now.
    in_flight: AtomicUsize,
    /// When the worker was made: the base of `last_arrival_us`.
    born: Instant,
    /// When the last relayed request arrived, in µs since `born`: one relaxed store per request
    /// instead of a lock every request of every connection would share.
    last_arrival_us: AtomicU64,
    /// The modules' document store.
    store: Arc<dyn StoreBackend>,
    /// The modules' cache.
    cache: Arc<dyn CacheBackend>,
    /// Where logged-in players are.
    sessions: Arc<dyn SessionStore>,
    /// The gateways holding their sessions.
    gateways: Arc<dyn Gateways>,
    /// Per-route metric handles, registered once (a labelled lookup per request costs).
    metrics: HashMap<&'static str, RouteMetrics>,
}

struct RouteMetrics {
    ok: metrics::Counter,
    duration: metrics::Histogram,
}

impl Worker {
    /// The worker of node `node_id`, serving the routes of `routes`, giving its modules
    /// `backends`. Call [`Worker::start`] before serving.
    pub fn new(node_id: String, routes: RouteTable, backends: Backends) -> Self {
        let metrics = routes
            .routes()
            .map(|route| {
                let ok = metrics::counter!(m::REQUESTS, "route" => route.path, "code" => m::code_label(0));
                let duration = metrics::histogram!(m::REQUEST_DURATION, "route" => route.path);
                (route.path, RouteMetrics { ok, duration })
            })
            .collect();
        let core = Core {
            node_id,
            routes,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            last_arrival_us: AtomicU64::new(0),
            store: backends.store,
            cache: backends.cache,
            sessions: backends.sessions,
            gateways: backends.gateways,
            metrics,
        };
        Self { core: Arc::new(core) }
    }

    /// Starts draining: from now on requests relayed over RPC are answered
    /// [`Handled::Draining`] without running, so their gateways send them to another worker.
    pub fn start_draining(&self) {
        self.core.draining.store(true, Ordering::Release);
    }

    /// Waits until no relayed request runs and none has arrived for `quiet`, or until `grace`
    /// has passed. True when it drained in time.
    pub async fn drained(&self, quiet: Duration, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            let idle_for = self
                .core
                .born
                .elapsed()
                .saturating_sub(Duration::from_micros(self.core.last_arrival_us.load(Ordering::Relaxed)));
            if self.core.in_flight.load(Ordering::Acquire) == 0 && idle_for >= quiet {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Relayed requests running now.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight.load(Ordering::Acquire)
    }

    /// The worker's route table.
    pub fn routes(&self) -> &RouteTable {
        &self.core.routes
    }

    /// Runs every enabled module's `on_start`, in no particular order.
    ///
    /// # Errors
    /// The first module that fails; modules started before it are stopped again.
    pub fn start(&self) -> Result<(), StartError> {
        let mut started = Vec::new();
        for (origin, module) in self.core.routes.modules_with_origin() {
            if let Err(source) = module.on_start() {
                started.into_iter().for_each(|m: &dyn mortar::Module| m.on_stop());
                return Err(StartError { module: module.name(), origin: origin.clone(), source });
            }
            started.push(module);
        }
        Ok(())
    }

    /// Runs every enabled module's `on_stop`.
    pub fn stop(&self) {
        self.core.routes.modules().for_each(|module| module.on_stop());
    }

    /// Handles one client request. Always answers: an unknown or internal route is `NO_ROUTE`, a
    /// route that needs a login from a session without one is `NOT_LOGGED_IN`, a body that does
    /// not decode is `BAD_REQUEST`, a panicking handler is `INTERNAL`.
    ///
    /// Each request runs in a `request` span carrying its route, seq, session, user and trace id,
    /// and is counted in the request metrics by route and code.
    pub async fn handle(&self, msg: AgentMessage) -> Reply {
        let Some(route) = self.core.routes.get_for_client(&msg.main, &msg.sub) else {
            metrics::counter!(m::REQUESTS, "route" => "_unknown", "code" => m::code_label(Code::NO_ROUTE.get()))
                .increment(1);
            return Reply::code(Code::NO_ROUTE);
        };
        if msg.user.is_none() && self.core.routes.needs_login(route) {
            metrics::counter!(m::REQUESTS, "route" => route.path, "code" => m::code_label(Code::NOT_LOGGED_IN.get()))
                .increment(1);
            return Reply::code(Code::NOT_LOGGED_IN);
        }
        // Debug level: a span per request is created only when someone listens to it (formatting
        // its fields for every request would cost more than the request itself).
        let span = tracing::debug_span!(
            "request",
            node = %self.core.node_id,
            route = route.path,
            seq = msg.seq,
            session = msg.session,
            user = msg.user,
            trace = %trace::display(msg.trace_id),
        );
        let trace_id = msg.trace_id;
        let request = Request {
            session: Session { id: msg.session, user: msg.user, ip: msg.client_ip, gateway: msg.gateway },
            route: route.path,
            seq: msg.seq,
            trace_id,
            depth: 0,
        };
        let ctx = Ctx::new(request, self.core.clone());
        let started = Instant::now();
        let reply: Reply = (route.handler)(ctx, msg.data).instrument(span.clone()).await.into();
        let elapsed = started.elapsed();
        span.in_scope(|| tracing::debug!(code = %m::code_label(reply.code), elapsed_us = elapsed.as_micros() as u64, "handled"));
        match self.core.metrics.get(route.path) {
            Some(stats) if reply.code == 0 => {
                stats.ok.increment(1);
                stats.duration.record(elapsed);
            }
            stats => {
                stats.inspect(|stats| stats.duration.record(elapsed));
                metrics::counter!(m::REQUESTS, "route" => route.path, "code" => m::code_label(reply.code))
                    .increment(1);
            }
        }
        reply
    }

    /// Serves the worker's tarpc service on one transport (an in-process channel or a TCP
    /// connection) until the peer hangs up. Each request runs on its own task.
    pub async fn serve<T>(self, transport: T)
    where
        T: tarpc::Transport<tarpc::Response<WorkerRpcResponse>, tarpc::ClientMessage<WorkerRpcRequest>>
            + Send
            + 'static,
    {
        BaseChannel::with_defaults(transport)
            .execute(WorkerServer(self).serve())
            .for_each(|request| async {
                tokio::spawn(request);
            })
            .await;
    }
}

/// The tarpc face of a [`Worker`].
#[derive(Clone)]
pub struct WorkerServer(Worker);

impl WorkerRpc for WorkerServer {
    async fn handle(self, _: tarpc::context::Context, msg: AgentMessage) -> Handled {
        let core = &self.0.core;
        let now_us = u64::try_from(core.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        core.last_arrival_us.store(now_us, Ordering::Relaxed);
        if core.draining.load(Ordering::Acquire) {
            return Handled::Draining(Box::new(msg));
        }
        core.in_flight.fetch_add(1, Ordering::AcqRel);
        // Decremented also when the call is cancelled (its deadline passed).
        let _running = InFlight(core);
        Handled::Reply(self.0.handle(msg).await)
    }

    async fn ping(self, _: tarpc::context::Context) {}

    async fn descriptors(self, _: tarpc::context::Context) -> Bytes {
        self.0.routes().descriptors()
    }
}

/// Counts one relayed request as running while it lives.
struct InFlight<'a>(&'a Core);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Host for Core {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn store(&self) -> Arc<dyn StoreBackend> {
        self.store.clone()
    }

    fn cache(&self) -> Arc<dyn CacheBackend> {
        self.cache.clone()
    }

    fn call(&self, from: &Ctx, path: &str, body: Bytes) -> BoxFuture<Result<Bytes, Code>> {
        let caller = from.request().route;
        if from.request().depth >= MAX_CALL_DEPTH {
            tracing::error!(%caller, callee = %path, "internal calls nest too deep");
            return Box::pin(std::future::ready(Err(Code::INTERNAL)));
        }
        let route = path.split_once('.').and_then(|(main, sub)| self.routes.get(main, sub));
        let Some(route) = route else {
            tracing::warn!(%caller, callee = %path, "internal call to a route this node does not serve");
            return Box::pin(std::future::ready(Err(Code::NO_ROUTE)));
        };
        // A panic in the handler is caught by the SDK's glue, on the module's side of a library
        // boundary, and answered INTERNAL (see `Host::panicked`).
        (route.handler)(from.for_call(route.path), body)
    }

    fn bind_user(&self, from: &Ctx, user: u64) -> BoxFuture<Result<(), Code>> {
        Box::pin(players::bind_user(
            self.sessions.clone(),
            self.gateways.clone(),
            from.request().session.clone(),
            user,
        ))
    }

    fn push(&self, _: &Ctx, users: Vec<u64>, route: &str, body: Bytes) -> BoxFuture<Result<Pushed, Code>> {
        Box::pin(players::push(self.sessions.clone(), self.gateways.clone(), users, route.to_owned(), body))
    }

    fn push_session(&self, from: &Ctx, route: &str, body: Bytes) -> BoxFuture<Result<bool, Code>> {
        let session = &from.request().session;
        Box::pin(players::push_session(
            self.gateways.clone(),
            session.gateway.clone(),
            session.id,
            route.to_owned(),
            body,
        ))
    }

    fn kick(&self, _: &Ctx, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        Box::pin(players::kick(self.sessions.clone(), self.gateways.clone(), user, reason))
    }

    fn online(&self, _: &Ctx, users: Vec<u64>) -> BoxFuture<Result<Vec<bool>, Code>> {
        Box::pin(players::online(self.sessions.clone(), users))
    }

    fn spawn(&self, task: BoxFuture<()>) {
        tokio::spawn(task);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn panicked(&self, request: &Request, site: PanicSite, message: &str) {
        metrics::counter!(m::HANDLER_PANICS, "route" => request.route).increment(1);
        let what = match site {
            PanicSite::Handler => "handler panicked; answered INTERNAL",
            PanicSite::Task => "task spawned by a handler panicked; it ended",
        };
        tracing::error!(
            node = %self.node_id,
            route = request.route,
            session = request.session.id,
            trace = %trace::display(request.trace_id),
            panic = %message,
            "{what}"
        );
    }
}
