//! The worker: runs module handlers for requests relayed by gateways.
//!
//! Layout:
//! - [`routes`]: the route table built from the linked modules, the loaded libraries and the
//!   enabled modules, each route checked against its rpc.
//! - [`library`]: the dynamic-module loader (the one place with `unsafe` code).
//! - `host`: what handlers ask of the host ([`mortar_abi::host::Host`] for the worker's core).
//! - [`players`]: where logged-in players are, through a session store and the gateways;
//!   [`directory`]: the same when the gateways themselves are the directory; [`gateways`]: the
//!   way to the gateways.
//! - [`tables`]: the game config tables of the modules, loaded and reloaded.
//! - this file: [`Worker`], which dispatches a request to its handler (the SDK's glue catches
//!   its panics and reports them through [`Host::panicked`](mortar_abi::host::Host::panicked)),
//!   serves the [`WorkerRpc`] tarpc
//!   service, runs internal calls between modules (here, or on the worker of the cluster that
//!   serves the callee's module) and the modules' `on_online` / `on_offline` hooks.
//! - [`jobs`]: the modules' scheduled jobs, run under a lease in the store.
//! - `system`: what the admin API does through the worker.

pub mod config;
pub mod directory;
pub mod gateways;
mod host;
pub mod jobs;
pub mod library;
pub mod players;
pub mod routes;
mod system;
pub mod tables;

use mortar_cluster::rpc::workers::WorkerPool;
use mortar_cluster::rpc::{
    AgentMessage, Called, Handled, InternalCall, Logins, LoginsAnswer, Presence, Reply, WorkerRpc,
    WorkerRpcRequest, WorkerRpcResponse,
};
use mortar_cluster::rpc::{
    codec::Frames,
    stream::{self, RelayHandler},
};
use mortar_telemetry::metrics as m;

use bytes::Bytes;
use futures::StreamExt as _;
use mortar_abi::{
    Code, Failure,
    cache::CacheBackend,
    host::{Invocation, Request, Session},
    module::ModuleError,
    store::StoreBackend,
};
use mortar_telemetry::trace;
use players::Players;
use routes::{Origin, RouteTable};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
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
    /// Where logged-in players are and the way to them (`Ctx::bind_user`, `Ctx::push`, …); set by
    /// the node (its own gateway in `mortar dev`, the cluster's gateways otherwise).
    pub players: Arc<dyn Players>,
    /// The cluster's other workers, for calls to modules this node does not serve; none in
    /// `mortar dev`.
    pub workers: Option<WorkerPool>,
    /// How many `Ctx::blocking` works run at once.
    pub blocking_threads: usize,
    /// Whether the store can write now; the node's readiness follows it.
    pub store_writable: Arc<std::sync::atomic::AtomicBool>,
}

impl Backends {
    /// No store (every store call is `UNAVAILABLE`), a small memory cache, a memory session store
    /// and no gateway: for tests and benches of the request path.
    pub fn none() -> Self {
        Self {
            store: Arc::new(mortar_backends::storage::NoStore),
            cache: Arc::new(mortar_backends::cache::memory::MemoryCache::new(10_000)),
            players: Arc::new(players::StorePlayers {
                store: Arc::new(mortar_backends::session::memory::MemorySessions::default()),
                gateways: Arc::new(gateways::NoGateways),
            }),
            workers: None,
            blocking_threads: 2,
            store_writable: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

/// The module-running side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    core: Arc<Core>,
}

struct Core {
    /// This core, for the futures of `Host` calls, which outlive the `&self` they start from.
    me: std::sync::Weak<Core>,
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
    /// Where logged-in players are, and the way to them.
    players: Arc<dyn Players>,
    /// The cluster's other workers.
    workers: Option<WorkerPool>,
    /// Places for `Ctx::blocking` works.
    blocking: Arc<tokio::sync::Semaphore>,
    /// The modules' `Ctx::spawn` tasks and `Ctx::blocking` works, which [`Worker::stop`] waits
    /// for: a caller that stopped waiting does not stop them.
    tasks: tokio_util::task::TaskTracker,
    /// Per-route metric handles, registered once (a labelled lookup per request costs).
    metrics: foldhash::HashMap<&'static str, RouteMetrics>,
    /// Cancelled when the worker stops: the job runners end.
    jobs_stop: tokio_util::sync::CancellationToken,
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
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            node_id,
            routes,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            last_arrival_us: AtomicU64::new(0),
            store: backends.store,
            cache: backends.cache,
            players: backends.players,
            workers: backends.workers,
            blocking: Arc::new(tokio::sync::Semaphore::new(backends.blocking_threads.max(1))),
            tasks: tokio_util::task::TaskTracker::new(),
            metrics,
            jobs_stop: tokio_util::sync::CancellationToken::new(),
        });
        Self { core }
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

    /// Runs every enabled module's `on_start` hook, one after the other, each by
    /// `config.start_timeout_ms`; then starts the runners of the enabled modules' scheduled jobs
    /// (see [`jobs`]), which [`Worker::stop`] ends.
    ///
    /// # Errors
    /// The first module that fails, or does not start in time; every module is stopped again.
    pub async fn start(&self, config: &config::WorkerConfig) -> Result<(), StartError> {
        for &(path, hook) in self.core.routes.start_hooks() {
            let deadline = Instant::now() + config.start_timeout();
            let request = Request {
                session: Session {
                    id: 0,
                    user: None,
                    ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    gateway: String::new(),
                },
                route: path,
                seq: 0,
                trace_id: trace::new_trace_id(),
                depth: 0,
                deadline,
            };
            let ran =
                tokio::time::timeout_at(deadline.into(), hook(Invocation::new(request, self.core.clone())))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ModuleError(format!(
                            "on_start did not end within {:?} (worker.start_timeout_ms)",
                            config.start_timeout()
                        )))
                    });
            if let Err(source) = ran {
                let module = path.split_once('.').map_or(path, |(main, _)| main);
                let (origin, module) = self
                    .core
                    .routes
                    .modules_with_origin()
                    .find(|(_, m)| m.name() == module)
                    .map(|(origin, m)| (origin.clone(), m.name()))
                    .unwrap_or((Origin::Linked, module));
                self.core.routes.modules().for_each(|m| m.on_stop());
                return Err(StartError { module, origin, source });
            }
        }
        let timing = config.job_timing();
        for &job in self.core.routes.jobs() {
            let (core, stop) = (self.core.clone(), self.core.jobs_stop.clone());
            self.core.tasks.spawn(jobs::run(core, job, timing, stop));
        }
        Ok(())
    }

    /// Waits (at most `grace`) for the tasks and blocking works the modules started, then runs
    /// every enabled module's `on_stop`. A stopped worker's modules write nothing more to its
    /// store, so the next node may open it at once.
    pub async fn stop(&self, grace: Duration) {
        self.core.jobs_stop.cancel();
        let tasks = &self.core.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(node = %self.core.node_id, remaining = tasks.len(), "module tasks still running after the shutdown grace period: leaving them");
        }
        self.core.routes.modules().for_each(|module| module.on_stop());
    }

    /// Handles one client request, whose client waits until `deadline`. Always answers: an
    /// unknown or internal route is `NO_ROUTE` (with a reason naming it, and the closest route a
    /// client may reach when it looks like a typo), a route that needs a login from a session
    /// without one is `NOT_LOGGED_IN` ("log in first"), a body that does not decode is
    /// `BAD_REQUEST`, a panicking handler is `INTERNAL`.
    ///
    /// Each request runs in a `request` span carrying its route, seq, session, user and trace id,
    /// and is counted in the request metrics by route and code.
    pub async fn handle(&self, msg: AgentMessage, deadline: Instant) -> Reply {
        let Some(route) = self.core.routes.get_for_client(&msg.main, &msg.sub) else {
            metrics::counter!(m::REQUESTS, "route" => "_unknown", "code" => m::code_label(Code::NO_ROUTE.get()))
                .increment(1);
            return Reply::because(Code::NO_ROUTE, self.core.routes.no_route_reason(&msg.main, &msg.sub));
        };
        if msg.user.is_none() && self.core.routes.needs_login(route) {
            metrics::counter!(m::REQUESTS, "route" => route.path, "code" => m::code_label(Code::NOT_LOGGED_IN.get()))
                .increment(1);
            return Reply::because(Code::NOT_LOGGED_IN, "log in first");
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
            session: Session {
                id: msg.session,
                user: msg.user,
                ip: msg.client_ip,
                gateway: msg.gateway.into(),
            },
            route: route.path,
            seq: msg.seq,
            trace_id,
            depth: 0,
            deadline,
        };
        let ctx = Invocation::new(request, self.core.clone());
        self.core.run(route, ctx, msg.data, span).await.into()
    }

    /// Runs internal call `call` from a module of another worker, by `deadline`. Always answers:
    /// a route this worker does not serve is `NO_ROUTE`, calls nested too deep `INTERNAL`.
    pub async fn call(&self, call: InternalCall, deadline: Instant) -> Reply {
        let Some(route) = self.core.routes.get(&call.main, &call.sub) else {
            tracing::warn!(node = %self.core.node_id, route = %format_args!("{}.{}", call.main, call.sub), "internal call to a route this node does not serve");
            return Reply::code(Code::NO_ROUTE);
        };
        if call.depth > MAX_CALL_DEPTH {
            tracing::error!(node = %self.core.node_id, route = route.path, "internal calls nest too deep");
            return Reply::code(Code::INTERNAL);
        }
        let span = tracing::debug_span!(
            "call",
            node = %self.core.node_id,
            route = route.path,
            session = call.session,
            user = call.user,
            trace = %trace::display(call.trace_id),
        );
        let request = Request {
            session: Session { id: call.session, user: call.user, ip: call.client_ip, gateway: call.gateway },
            route: route.path,
            seq: 0,
            trace_id: call.trace_id,
            depth: call.depth,
            deadline,
        };
        let ctx = Invocation::new(request, self.core.clone());
        self.core.run(route, ctx, call.data, span).await.into()
    }

    /// Runs the `on_online` or `on_offline` hooks (by `presence.status`) of those of `modules`
    /// this worker serves for the player who came online or went offline, at once, each by
    /// `deadline`, in a `hook` span and counted in the request metrics under the hook's route
    /// (`friend.on_offline`); completes when they have run. (Layers wrap routes, whose bodies
    /// they may read; hooks have none and run bare.)
    pub async fn presence(&self, presence: Presence, modules: &[String], deadline: Instant) {
        let trace_id = trace::new_trace_id();
        let hooks =
            modules.iter().filter_map(|module| self.core.routes.hook(module, presence.status)).map(|hook| {
                let request = Request {
                    session: Session {
                        id: presence.session,
                        user: Some(presence.user),
                        ip: presence.client_ip,
                        gateway: presence.gateway.clone(),
                    },
                    route: hook.path,
                    seq: 0,
                    trace_id,
                    depth: 0,
                    deadline,
                };
                let ctx = Invocation::new(request, self.core.clone());
                let (node, user) = (&self.core.node_id, presence.user);
                let span = tracing::debug_span!(
                    "hook",
                    node = %node,
                    route = hook.path,
                    session = presence.session,
                    user,
                    trace = %trace::display(trace_id),
                );
                async move {
                    let started = Instant::now();
                    // A panic is caught by the SDK's glue and reported through `Host::panicked`.
                    let ran = tokio::time::timeout_at(deadline.into(), (hook.run)(ctx, user))
                        .instrument(span)
                        .await;
                    let code = match ran {
                        Ok(()) => Code::OK,
                        Err(_) => {
                            tracing::warn!(%node, hook = hook.path, user, "hook cut short at its deadline");
                            Code::TIMEOUT
                        }
                    };
                    // Counted like requests, by the hook's route (`friend.on_offline`).
                    metrics::counter!(m::REQUESTS, "route" => hook.path, "code" => m::code_label(code.get()))
                        .increment(1);
                    metrics::histogram!(m::REQUEST_DURATION, "route" => hook.path).record(started.elapsed());
                }
            });
        futures::future::join_all(hooks).await;
    }

    /// Changes the cluster's logins as a gateway asks (see [`Logins`]): the runtime is the
    /// session store's one writer.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store cannot be reached; `BAD_REQUEST` when the gateways
    /// are the session directory (each keeps its own logins).
    pub async fn logins(&self, change: Logins) -> Result<LoginsAnswer, Code> {
        self.core.players.logins(change).await
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

    /// Serves a peer's connection after the handshake until the peer hangs up: its client
    /// requests on the relay stream (see [`stream`]), the rest of the worker's service on tarpc.
    pub async fn serve_connection(self, frames: Frames) {
        let relay = Arc::new(WorkerServer(self.clone()));
        stream::serve(frames, relay, |tarpc| self.serve(tarpc)).await;
    }
}

impl Core {
    /// The one way a handler runs, for a client request, an internal call (from a module of this
    /// node or another) and an admin API call: through the route's layers, in `span`, logged at
    /// debug and counted in the request metrics by route and code.
    async fn run(
        &self,
        route: &'static mortar_abi::route::Route,
        ctx: Invocation,
        body: Bytes,
        span: tracing::Span,
    ) -> Result<Bytes, Failure> {
        let started = Instant::now();
        let reply = match self.routes.layers_of(route.path) {
            None => (route.handler)(ctx, body),
            Some(layers) => mortar_abi::layer::Next::new(route.handler, layers.clone()).run(ctx, body),
        };
        let reply = reply.instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let code = reply.as_ref().map_or_else(|failure| failure.code().get(), |_| 0);
        span.in_scope(|| tracing::debug!(code = %m::code_label(code), elapsed_us = elapsed.as_micros() as u64, "handled"));
        match self.metrics.get(route.path) {
            Some(stats) if code == 0 => {
                stats.ok.increment(1);
                stats.duration.record(elapsed);
            }
            stats => {
                stats.inspect(|stats| stats.duration.record(elapsed));
                metrics::counter!(m::REQUESTS, "route" => route.path, "code" => m::code_label(code))
                    .increment(1);
            }
        }
        reply
    }
}

/// The tarpc face of a [`Worker`].
#[derive(Clone)]
pub struct WorkerServer(Worker);

impl WorkerServer {
    /// Counts an arrival; `None` when draining, else the guard counting it as running while it
    /// lives (also when the call is cancelled at its deadline).
    fn arrive(&self) -> Option<InFlight<'_>> {
        let core = &self.0.core;
        let now_us = u64::try_from(core.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        core.last_arrival_us.store(now_us, Ordering::Relaxed);
        if core.draining.load(Ordering::Acquire) {
            return None;
        }
        core.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(core))
    }
}

impl WorkerRpc for WorkerServer {
    async fn handle(self, cx: tarpc::context::Context, msg: AgentMessage) -> Handled {
        let Some(_running) = self.arrive() else { return Handled::Draining(Box::new(msg)) };
        Handled::Reply(self.0.handle(msg, cx.deadline).await)
    }

    async fn call(self, cx: tarpc::context::Context, call: InternalCall) -> Called {
        let Some(_running) = self.arrive() else { return Called::Draining(Box::new(call)) };
        Called::Reply(self.0.call(call, cx.deadline).await)
    }

    async fn presence(self, cx: tarpc::context::Context, presence: Presence, modules: Vec<String>) {
        // Hooks run also while draining: the player's presence changed either way, and no other
        // worker would run them.
        self.0.presence(presence, &modules, cx.deadline).await;
    }

    async fn logins(self, _: tarpc::context::Context, change: Logins) -> Result<LoginsAnswer, i32> {
        // Also while draining: a gateway's sessions end and restart whether workers drain or not.
        self.0.logins(change).await.map_err(|code| code.get())
    }

    async fn ping(self, _: tarpc::context::Context) {}

    async fn descriptors(self, _: tarpc::context::Context) -> Bytes {
        self.0.routes().descriptors()
    }
}

impl RelayHandler for WorkerServer {
    fn handle(&self, msg: AgentMessage, deadline: Instant) -> futures::future::BoxFuture<'static, Handled> {
        let server = self.clone();
        Box::pin(async move {
            let Some(_running) = server.arrive() else { return Handled::Draining(Box::new(msg)) };
            Handled::Reply(server.0.handle(msg, deadline).await)
        })
    }
}

/// Counts one relayed request as running while it lives.
struct InFlight<'a>(&'a Core);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
