//! [`Ctx`]: what a handler knows about its request and what it can ask of the host.

use crate::{
    cache::{Cache, CacheBackend},
    code::{Code, Failure},
    store::{Document, Store, StoreBackend},
};
use bytes::Bytes;
use prost::{Message, Name};
use std::{
    fmt,
    future::Future,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

pub use crate::future::BoxFuture;

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

/// What became of a push ([`Ctx::push`]).
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

/// Where module code panicked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicSite {
    /// In a handler: the request is answered `INTERNAL`.
    Handler,
    /// In a task from [`Ctx::spawn`]: the task ended.
    Task,
    /// In a module's `on_online` or `on_offline` hook: the hook ended.
    Hook,
}

/// What the host does for handlers. Implemented by the host; module code uses [`Ctx`].
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
    fn call(&self, from: &Ctx, route: &str, body: Bytes) -> BoxFuture<Result<Bytes, Failure>>;

    /// Logs the session of `from` in as `user`: its gateway marks it, the session store records
    /// where `user` is, and a session of `user` elsewhere is kicked with `LOGGED_IN_ELSEWHERE`.
    fn bind_user(&self, from: &Ctx, user: u64) -> BoxFuture<Result<(), Code>>;

    /// The instance of enabled module `name` on this node (see [`Ctx::module`]).
    fn module(&self, name: &str) -> Option<Arc<dyn std::any::Any + Send + Sync>>;

    /// The values of config section `section` this node read (see [`crate::config::decode`]).
    fn config(&self, section: &str) -> Option<crate::config::Values>;

    /// The rows of game config table `file` this node loaded (see [`crate::table::decode`]).
    fn table(&self, file: &str) -> Option<crate::table::Loaded>;

    /// Pushes `route` with `body`, an encoded `message` (its full proto name), to each of `users`
    /// that is online, one batch per gateway. `BAD_REQUEST` when no loaded proto declares `route`
    /// with that message as its rpc's output.
    fn push(
        &self,
        from: &Ctx,
        users: Vec<u64>,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>>;

    /// Pushes `route` with `body`, an encoded `message`, to the session of `from`, logged in or
    /// not; false when the session has ended. `BAD_REQUEST` as for [`Host::push`].
    fn push_session(
        &self,
        from: &Ctx,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<bool, Code>>;

    /// Kicks `user`'s session, wherever it is, with `reason`; false when `user` is offline.
    fn kick(&self, from: &Ctx, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>>;

    /// Whether each of `users` is online, in their order.
    fn online(&self, from: &Ctx, users: Vec<u64>) -> BoxFuture<Result<Vec<bool>, Code>>;

    /// Runs `task` on the host's runtime, detached.
    fn spawn(&self, task: BoxFuture<()>);

    /// Runs `work` on the host's threads for blocking work, once one of its places is free;
    /// completes when it has run.
    fn blocking(&self, work: Box<dyn FnOnce() + Send>) -> BoxFuture<()>;

    /// Completes after `duration`, timed by the host's runtime.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;

    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Module code running for `request` panicked with `message`: a handler, answered
    /// `INTERNAL`, or a task it spawned or an `on_offline` hook, ended. For the host's log and metrics.
    fn panicked(&self, request: &Request, site: PanicSite, message: &str);
}

/// The handle a handler receives: the request's session and route, and the host's services.
///
/// Cheap to clone; clones share the request.
#[derive(Clone)]
pub struct Ctx {
    // One allocation per request, and one reference count to bump per clone.
    inner: Arc<Inner>,
}

struct Inner {
    request: Request,
    host: Arc<dyn Host>,
}

impl Ctx {
    /// Made by the host for each request.
    pub fn new(request: Request, host: Arc<dyn Host>) -> Self {
        Self { inner: Arc::new(Inner { request, host }) }
    }

    /// The request being handled.
    pub fn request(&self) -> &Request {
        &self.inner.request
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.inner.request.session.id
    }

    /// The logged-in user of the session, if any.
    pub fn user_id(&self) -> Option<u64> {
        self.inner.request.session.user
    }

    /// The client's IP address.
    pub fn client_ip(&self) -> IpAddr {
        self.inner.request.session.ip
    }

    /// The id of the node running this handler (`node.id` of its config).
    pub fn node_id(&self) -> &str {
        self.inner.host.node_id()
    }

    /// When the client stops waiting for this request. Calls to other modules made after it fail
    /// with `TIMEOUT`; a task from [`Ctx::spawn`] that outlives the request and calls other
    /// modules gives itself time with [`Ctx::with_timeout`].
    pub fn deadline(&self) -> Instant {
        self.inner.request.deadline
    }

    /// The time left until [`Ctx::deadline`]; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.inner.request.deadline.saturating_duration_since(Instant::now())
    }

    /// This context with the deadline `timeout` from now, for work that outlives the request
    /// (a task from [`Ctx::spawn`]) and calls other modules.
    pub fn with_timeout(&self, timeout: Duration) -> Ctx {
        let request = Request { deadline: Instant::now() + timeout, ..self.inner.request.clone() };
        Ctx::new(request, Arc::clone(&self.inner.host))
    }

    /// This module's keys in the node's cache (see [`crate::cache`]): the module is the `main`
    /// of the route being handled.
    pub fn cache(&self) -> Cache {
        let module =
            self.inner.request.route.split_once('.').map_or(self.inner.request.route, |(main, _)| main);
        Cache::new(self.inner.host.cache(), module)
    }

    /// This module's instance on this node: the value [`module!`](macro@crate::module) made
    /// (`mortar::module!(Group)` makes a `Group::default()`), with the state the module keeps
    /// per node. `None` when the module running this request is not a `T`.
    ///
    /// ```ignore
    /// #[derive(Default)]
    /// pub struct Lobby { waiting: std::sync::Mutex<Vec<u64>> }
    /// impl mortar::Module for Lobby {
    ///     fn name(&self) -> &'static str { "lobby" }
    /// }
    /// mortar::module!(Lobby);
    ///
    /// #[mortar::handler("lobby.wait")]
    /// async fn wait(ctx: Ctx, _: WaitReq) -> Result<WaitResp, Code> {
    ///     let lobby = ctx.module::<Lobby>().ok_or(Code::INTERNAL)?;
    ///     lobby.waiting.lock().unwrap().push(ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?);
    ///     Ok(WaitResp {})
    /// }
    /// ```
    pub fn module<T: crate::Module>(&self) -> Option<Arc<T>> {
        let route = self.inner.request.route;
        let name = route.split_once('.').map_or(route, |(main, _)| main);
        self.inner.host.module(name)?.downcast::<T>().ok()
    }

    /// This module's config section `T` (see [`config`](mod@crate::config)), as this node read
    /// it (its defaults when the node has not read it: a context outside a node).
    pub fn config<T: crate::config::Config>(&self) -> Arc<T> {
        self.inner
            .host
            .config(T::SECTION)
            .and_then(|values| values.downcast::<T>().ok())
            .unwrap_or_else(|| Arc::new(T::default()))
    }

    /// The rows of game config table `T` (see [`table`](mod@crate::table)) this node loaded (none
    /// in a context outside a node): a snapshot, which a reload does not change under this
    /// request.
    pub fn table<T: crate::table::Row>(&self) -> Arc<crate::table::Rows<T>> {
        self.inner
            .host
            .table(T::FILE)
            .and_then(|rows| rows.downcast::<crate::table::Rows<T>>().ok())
            .unwrap_or_default()
    }

    /// The collection of document type `T` in the node's store (see [`crate::store`]).
    pub fn store<T: Document>(&self) -> Store<T> {
        Store::new(self.inner.host.store())
    }

    /// Calls another module's route (typically an internal one) and decodes its reply: on this
    /// node when it serves the route's module, otherwise over RPC on a worker that does (chosen by
    /// the session's user, as client requests are).
    ///
    /// The callee sees the same session (user, IP, gateway), trace id and deadline.
    ///
    /// # Errors
    /// The callee's code; `NO_ROUTE` when this node does not serve the route's module and no
    /// worker of the cluster does, or the module has no such route; `UNAVAILABLE` when the
    /// workers serving it cannot be reached; `TIMEOUT` past the deadline; `INTERNAL` when calls
    /// nest too deep or the reply does not decode as `Resp`.
    pub async fn call<Req, Resp>(&self, route: &str, req: &Req) -> Result<Resp, Code>
    where
        Req: Message,
        Resp: Message + Default,
    {
        // The callee's reason is for its own clients (the admin API shows it); a module maps the
        // code to its own answer.
        let reply = self
            .inner
            .host
            .call(self, route, Bytes::from(req.encode_to_vec()))
            .await
            .map_err(|failure| failure.code())?;
        Resp::decode(reply).map_err(|_| Code::INTERNAL)
    }
}

/// Players: login, pushes, kicks and presence, the same in `mortar dev` and across a cluster.
impl Ctx {
    /// Logs this request's session in as `user` (after the module checked the credentials). From
    /// the next request on the session's requests carry `user` (`Ctx::user_id`). A session of the
    /// same user elsewhere, on any gateway, is first kicked with `LOGGED_IN_ELSEWHERE`.
    ///
    /// # Errors
    /// `BAD_REQUEST` for user 0 (not a user id); `UNAVAILABLE` when the session store or the
    /// session's gateway cannot be reached, or the session ended meanwhile.
    pub async fn bind_user(&self, user: u64) -> Result<(), Code> {
        if user == 0 {
            return Err(Code::BAD_REQUEST);
        }
        self.inner.host.bind_user(self, user).await
    }

    /// Pushes `msg` as route `route` (`seq` 0) to each of `users` who is online, wherever they
    /// are: one message per gateway holding any of them.
    ///
    /// The answer says what became of each user, in every cluster layout: those logged in nowhere
    /// are listed in [`Pushed::offline`] (nothing was sent: store the news, e.g. as mail, if it
    /// must not be lost); the others count in [`Pushed::delivered`] (queued for their client) or
    /// [`Pushed::undelivered`] (online but not reached). A push is never answered `Ok` with its
    /// users silently dropped.
    ///
    /// # Errors
    /// `BAD_REQUEST` for a route that no proto declares with `M` as its rpc's output (a push
    /// route is a server-streaming rpc: `rpc Note(Text) returns (stream Text);` in service
    /// `Testkit` declares `testkit.note`; a push may also share a request route and carry its
    /// reply type), a bug the node logs; `UNAVAILABLE` when the session store cannot be reached.
    pub async fn push<M: Message + Name>(&self, users: &[u64], route: &str, msg: &M) -> Result<Pushed, Code> {
        let body = Bytes::from(msg.encode_to_vec());
        self.inner.host.push(self, users.to_vec(), route, &M::full_name(), body).await
    }

    /// Pushes `msg` as route `route` (`seq` 0) to this request's own session, logged in or not
    /// (a login challenge, a queue position): false when the session has ended.
    ///
    /// # Errors
    /// `BAD_REQUEST` as for [`Ctx::push`]; `UNAVAILABLE` when the session's gateway cannot be
    /// reached.
    pub async fn push_session<M: Message + Name>(&self, route: &str, msg: &M) -> Result<bool, Code> {
        let body = Bytes::from(msg.encode_to_vec());
        self.inner.host.push_session(self, route, &M::full_name(), body).await
    }

    /// Kicks `user`'s session with `reason` (it gets `sys.kick` and is closed); false when `user`
    /// is offline.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store or the user's gateway cannot be reached.
    pub async fn kick(&self, user: u64, reason: Code) -> Result<bool, Code> {
        self.inner.host.kick(self, user, reason).await
    }

    /// Whether `user` is online.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store cannot be reached.
    pub async fn is_online(&self, user: u64) -> Result<bool, Code> {
        Ok(self.online(&[user]).await?.first().copied().unwrap_or(false))
    }

    /// Whether each of `users` is online, in their order: one lookup for a whole friend list.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store cannot be reached.
    pub async fn online(&self, users: &[u64]) -> Result<Vec<bool>, Code> {
        self.inner.host.online(self, users.to_vec()).await
    }
}

/// The runtime, through the host: module code never names tokio itself, so the same code runs
/// linked into `mortar` or loaded from a library (whose copy of tokio has no runtime).
impl Ctx {
    /// Runs `task` in the background on the host's runtime. A panic in it ends it and is logged
    /// with this request's route and trace id; the node stays up.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let ctx = self.clone();
        self.inner.host.spawn(Box::pin(async move {
            if let Err(message) = crate::panic::catch(task).await {
                ctx.inner.host.panicked(&ctx.inner.request, PanicSite::Task, &message);
            }
        }));
    }

    /// Runs `work` on the host's threads for blocking work (a password hash, a large file), so the
    /// async threads that serve every player stay free, and gives back what it returned. At most
    /// `worker.blocking_threads` such works run at once on a node; the others wait their turn.
    ///
    /// # Errors
    /// `INTERNAL` when `work` panics (reported like a handler's panic).
    pub async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Code> {
        let out = Arc::new(std::sync::Mutex::new(None));
        let slot = out.clone();
        self.inner
            .host
            .blocking(Box::new(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
            }))
            .await;
        let result = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match result {
            Some(Ok(value)) => Ok(value),
            Some(Err(panic)) => {
                self.panicked(&crate::panic::message(&*panic));
                Err(Code::INTERNAL)
            }
            None => Err(Code::INTERNAL),
        }
    }

    /// Completes after `duration`.
    pub async fn sleep(&self, duration: Duration) {
        self.inner.host.sleep(duration).await;
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.inner.host.now()
    }

    /// Reports a panic of this request's handler to the host.
    pub(crate) fn panicked(&self, message: &str) {
        self.inner.host.panicked(&self.inner.request, PanicSite::Handler, message);
    }

    /// Reports a panic of an `on_online` or `on_offline` hook to the host.
    pub(crate) fn hook_panicked(&self, message: &str) {
        self.inner.host.panicked(&self.inner.request, PanicSite::Hook, message);
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("request", &self.inner.request).finish_non_exhaustive()
    }
}

impl Ctx {
    /// The context of an internal call made from this request to `route`: same session and trace,
    /// one level deeper. Used by the host to run [`Ctx::call`].
    #[doc(hidden)]
    pub fn for_call(&self, route: &'static str) -> Ctx {
        let request = Request {
            session: self.inner.request.session.clone(),
            route,
            seq: 0,
            trace_id: self.inner.request.trace_id,
            depth: self.inner.request.depth.saturating_add(1),
            deadline: self.inner.request.deadline,
        };
        Ctx::new(request, Arc::clone(&self.inner.host))
    }
}
