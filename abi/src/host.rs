//! The host's side of a request: who sent it ([`Session`], [`Request`]), the services a node
//! offers module code ([`Host`]), and [`Invocation`], the two together as the host hands them to a
//! handler (the SDK wraps it in `mortar::Ctx`).

use crate::{
    cache::CacheBackend,
    code::{Code, Failure},
    future::BoxFuture,
    store::StoreBackend,
};
use bytes::Bytes;
use std::{
    fmt,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

/// Who sent a request: the client session it came from, as the gateway saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id, unique within its gateway for the gateway's lifetime.
    pub id: u64,
    /// The logged-in user, if the session has logged in.
    pub user: Option<u64>,
    /// The client's IP address as the gateway saw the connection.
    pub ip: IpAddr,
    /// The id of the gateway node holding the session.
    pub gateway: String,
}

/// The request being handled.
#[derive(Clone, Debug)]
pub struct Request {
    /// The session the request (or the client request that led to this internal call) came from.
    pub session: Session,
    /// The route being handled, `main.sub`.
    pub route: &'static str,
    /// The client's request id (0 for internal calls).
    pub seq: u32,
    /// Trace id shared by every call made on behalf of one client request.
    pub trace_id: u128,
    /// How many internal calls deep this request is (0 for a client request).
    pub depth: u8,
    /// When the client stops waiting: the gateway's request timeout from when it relayed the
    /// request. Internal calls made for it inherit it, also across nodes.
    pub deadline: Instant,
}

/// What became of a push (`mortar::Ctx::push`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Sessions it was queued for.
    pub delivered: usize,
    /// Users not logged in anywhere (or only on a gateway that cannot be reached): nothing was
    /// sent to them.
    pub offline: Vec<u64>,
    /// Users it did not reach who may be online: their client does not read (its queue is full),
    /// their session ended meanwhile, or a gateway that may hold them failed to answer.
    pub undelivered: usize,
}

/// What became of a push to sessions ([`Host::push_sessions`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionsPushed {
    /// Sessions it was queued for.
    pub delivered: usize,
    /// The indexes, among the sessions asked, of those that have ended (or whose gateway cannot
    /// be reached): nothing was sent to them.
    pub gone: Vec<usize>,
    /// Sessions it did not reach that still are: their client does not read (its queue is full).
    pub undelivered: usize,
}

/// Where module code panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicSite {
    /// In a handler: the request is answered `INTERNAL`.
    Handler,
    /// In a task from `mortar::Ctx::spawn`: the task ended.
    Task,
    /// In a module's `on_online` or `on_offline` hook: the hook ended.
    Hook,
    /// In a module's `on_start` hook: the node does not start.
    Start,
    /// In a scheduled job: its run failed, and is tried again.
    Job,
}

/// How much a line of a module's log matters (see [`Host::log`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Something failed and someone should look.
    Error,
    /// Something looks wrong but was handled.
    Warn,
    /// What happened, for operators.
    Info,
    /// Detail for whoever debugs the module.
    Debug,
    /// Even more detail.
    Trace,
}

/// What the host does for module code. Implemented by the host; module code reaches it through
/// `mortar::Ctx`.
pub trait Host: Send + Sync + 'static {
    /// The id of the node running the handler.
    fn node_id(&self) -> &str;

    /// The node's document store.
    fn store(&self) -> Arc<dyn StoreBackend>;

    /// The node's cache.
    fn cache(&self) -> Arc<dyn CacheBackend>;

    /// Runs internal or client route `route` with an encoded body on behalf of `from`, on a node
    /// that serves the route's module (this node when it does), by `from`'s deadline. A failure
    /// carries the callee's reason when it gave one.
    fn call(&self, from: &Invocation, route: &str, body: Bytes) -> BoxFuture<Result<Bytes, Failure>>;

    /// Logs the session of `from` in as `user`: its gateway marks it, the session store records
    /// where `user` is, and a session of `user` elsewhere is kicked with `LOGGED_IN_ELSEWHERE`.
    fn bind_user(&self, from: &Invocation, user: u64) -> BoxFuture<Result<(), Code>>;

    /// The instance of enabled module `name` on this node (see `mortar::Ctx::module`).
    fn module(&self, name: &str) -> Option<Arc<dyn std::any::Any + Send + Sync>>;

    /// The values of config section `section` this node read (see `mortar::config::decode`).
    fn config(&self, section: &str) -> Option<crate::config::Values>;

    /// The rows of game config table `file` this node loaded (see `mortar::table::decode`).
    fn table(&self, file: &str) -> Option<crate::table::Loaded>;

    /// Pushes `route` with `body`, an encoded `message` (its full proto name), to each of `users`
    /// that is online, one batch per gateway. `BAD_REQUEST` when no loaded proto declares `route`
    /// with that message as its rpc's output.
    fn push(
        &self,
        from: &Invocation,
        users: Vec<u64>,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>>;

    /// Pushes `route` with `body`, an encoded `message`, to each of sessions `to`, logged in or
    /// not, wherever they are: one batch per gateway, with no session-store lookup.
    /// `BAD_REQUEST` as for [`Host::push`].
    fn push_sessions(
        &self,
        from: &Invocation,
        to: Vec<Session>,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<SessionsPushed, Code>>;

    /// Has the gateway of each of `sessions` hold `will` for it under `key`: the push `(route,
    /// message, body)` it sends the session if it loses this node (it died); none drops the
    /// session's will under `key`. `BAD_REQUEST` as for [`Host::push`]; `UNAVAILABLE` when a
    /// gateway cannot be reached.
    fn wills(
        &self,
        from: &Invocation,
        sessions: Vec<Session>,
        key: &str,
        will: Option<(&str, &str, Bytes)>,
    ) -> BoxFuture<Result<(), Code>>;

    /// Kicks `user`'s session, wherever it is, with `reason`; false when `user` is offline.
    fn kick(&self, from: &Invocation, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>>;

    /// Whether each of `users` is online, in their order.
    fn online(&self, from: &Invocation, users: Vec<u64>) -> BoxFuture<Result<Vec<bool>, Code>>;

    /// Runs `task` on the host's runtime, detached.
    fn spawn(&self, task: BoxFuture<()>);

    /// Runs `work` on the host's threads for blocking work, once one of its places is free;
    /// completes when it has run.
    fn blocking(&self, work: Box<dyn FnOnce() + Send>) -> BoxFuture<()>;

    /// Completes after `duration`, timed by the host's runtime.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;

    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Writes `message` to the node's log at `level`, with the request's route, session, user and
    /// trace id: the one way module code in a library reaches the host's log (its own copy of
    /// `tracing` has no subscriber).
    fn log(&self, request: &Request, level: Level, message: &str);

    /// Whether the node is stopping: tasks module code spawned should end now (the node waits
    /// `worker.shutdown_grace_ms` for them).
    fn stopping(&self) -> bool;

    /// A room of module `module` (see `mortar::room`) ticked `late` after its time; `overran`
    /// when the tick's work took longer than the room's period. For the host's metrics.
    fn room_tick(&self, module: &str, late: Duration, overran: bool);

    /// Module code running for `request` panicked with `message`: a handler, answered
    /// `INTERNAL`, or a task it spawned or an `on_offline` hook, ended. For the host's log and metrics.
    fn panicked(&self, request: &Request, site: PanicSite, message: &str);
}

/// One run of module code as the host hands it over: the request and the host serving it.
///
/// Cheap to clone; clones share the request. The SDK's `Ctx` is this and the typed methods a
/// module author uses.
#[derive(Clone)]
pub struct Invocation {
    // One allocation per request, and one reference count to bump per clone.
    inner: Arc<Inner>,
}

struct Inner {
    request: Request,
    host: Arc<dyn Host>,
}

impl Invocation {
    /// Made by the host for each request.
    pub fn new(request: Request, host: Arc<dyn Host>) -> Self {
        Self { inner: Arc::new(Inner { request, host }) }
    }

    /// The request being handled.
    pub fn request(&self) -> &Request {
        &self.inner.request
    }

    /// The host serving it.
    pub fn host(&self) -> &Arc<dyn Host> {
        &self.inner.host
    }

    /// The module running: the `main` of the request's route.
    pub fn module(&self) -> &'static str {
        let route = self.inner.request.route;
        route.split_once('.').map_or(route, |(main, _)| main)
    }

    /// This invocation with its deadline moved to `deadline`.
    pub fn with_deadline(&self, deadline: Instant) -> Self {
        let request = Request { deadline, ..self.inner.request.clone() };
        Self::new(request, Arc::clone(&self.inner.host))
    }

    /// The invocation of an internal call made from this request to `route`: same session and
    /// trace, one level deeper.
    pub fn for_call(&self, route: &'static str) -> Self {
        let request = Request {
            session: self.inner.request.session.clone(),
            route,
            seq: 0,
            trace_id: self.inner.request.trace_id,
            depth: self.inner.request.depth.saturating_add(1),
            deadline: self.inner.request.deadline,
        };
        Self::new(request, Arc::clone(&self.inner.host))
    }

    /// Reports that module code running for this request panicked at `site` with `message`.
    pub fn panicked(&self, site: PanicSite, message: &str) {
        self.inner.host.panicked(&self.inner.request, site, message);
    }
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation").field("request", &self.inner.request).finish_non_exhaustive()
    }
}
