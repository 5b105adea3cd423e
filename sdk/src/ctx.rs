//! [`Ctx`]: what a handler knows about its request and what it can ask of the host.

use crate::{
    cache::Cache,
    code::Code,
    store::{Document, Store},
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

pub use mortar_abi::{
    future::BoxFuture,
    host::{Host, Invocation, Level, PanicSite, Pushed, Request, Session, SessionsPushed},
};

/// The handle a handler receives: the request's session and route, and the host's services.
///
/// Cheap to clone; clones share the request.
#[derive(Clone)]
pub struct Ctx(Invocation);

impl From<Invocation> for Ctx {
    fn from(invocation: Invocation) -> Self {
        Self(invocation)
    }
}

impl From<Ctx> for Invocation {
    fn from(ctx: Ctx) -> Self {
        ctx.0
    }
}

impl Ctx {
    /// A context for `request` on `host` (the host makes one for each request; a test may make
    /// its own with a host of its own).
    pub fn new(request: Request, host: Arc<dyn Host>) -> Self {
        Self(Invocation::new(request, host))
    }

    /// The request being handled.
    pub fn request(&self) -> &Request {
        self.0.request()
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.0.request().session.id
    }

    /// The logged-in user of the session, if any.
    pub fn user_id(&self) -> Option<u64> {
        self.0.request().session.user
    }

    /// The client's IP address.
    pub fn client_ip(&self) -> IpAddr {
        self.0.request().session.ip
    }

    /// The id of the node running this handler (`node.id` of its config).
    pub fn node_id(&self) -> &str {
        self.0.host().node_id()
    }

    /// When the client stops waiting for this request. Calls to other modules made after it fail
    /// with `TIMEOUT`; a task from [`Ctx::spawn`] that outlives the request and calls other
    /// modules gives itself time with [`Ctx::with_timeout`].
    pub fn deadline(&self) -> Instant {
        self.0.request().deadline
    }

    /// The time left until [`Ctx::deadline`]; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0.request().deadline.saturating_duration_since(Instant::now())
    }

    /// This context with the deadline `timeout` from now, for work that outlives the request
    /// (a task from [`Ctx::spawn`]) and calls other modules.
    pub fn with_timeout(&self, timeout: Duration) -> Ctx {
        Ctx(self.0.with_deadline(Instant::now() + timeout))
    }

    /// This module's keys in the node's cache (see [`crate::cache`]): the module is the `main`
    /// of the route being handled.
    pub fn cache(&self) -> Cache {
        Cache::new(self.0.host().cache(), self.0.module())
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
        self.0.host().module(self.0.module())?.downcast::<T>().ok()
    }

    /// This module's config section `T` (see [`config`](mod@crate::config)), as this node read
    /// it (its defaults when the node has not read it: a context outside a node).
    pub fn config<T: crate::config::Config>(&self) -> Arc<T> {
        self.0
            .host()
            .config(T::SECTION)
            .and_then(|values| values.downcast::<T>().ok())
            .unwrap_or_else(|| Arc::new(T::default()))
    }

    /// The rows of game config table `T` (see [`table`](mod@crate::table)) this node loaded (none
    /// in a context outside a node): a snapshot, which a reload does not change under this
    /// request.
    pub fn table<T: crate::table::Row>(&self) -> Arc<crate::table::Rows<T>> {
        self.0
            .host()
            .table(T::FILE)
            .and_then(|rows| rows.downcast::<crate::table::Rows<T>>().ok())
            .unwrap_or_default()
    }

    /// The collection of document type `T` in the node's store (see [`crate::store`]).
    pub fn store<T: Document>(&self) -> Store<T> {
        Store::new(self.0.host().store())
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
            .0
            .host()
            .call(&self.0, route, Bytes::from(req.encode_to_vec()))
            .await
            .map_err(|failure| failure.code())?;
        Resp::decode(reply).map_err(|_| Code::INTERNAL)
    }
}

/// A push a session's gateway holds for it and sends if it loses the worker that left it (see
/// [`Ctx::leave_will`]): a room's "this room ended" for its members.
#[derive(Clone, Debug)]
pub struct Will {
    /// Its route, `main.sub`, declared as a push.
    pub route: String,
    /// The full name of its message.
    pub message: String,
    /// The encoded message.
    pub body: Bytes,
}

impl Will {
    /// The push `msg` as `route`.
    pub fn new<M: Message + Name>(route: &str, msg: &M) -> Self {
        Will { route: route.to_owned(), message: M::full_name(), body: Bytes::from(msg.encode_to_vec()) }
    }
}

/// What calls routes by name: [`Ctx`] from a module (errors are [`Code`]s), a test client from a
/// test (`mortar_testing`, errors are [`Failure`](crate::Failure)s with their reasons). The typed
/// clients generated for each service (`UserClient(&ctx).lookup(&req)`, see
/// `mortar::build::Protos`, feature `build`) call through it.
pub trait Caller {
    /// What a failed call answers.
    type Error;

    /// Sends `req` to `route` (`main.sub`) and decodes the reply as `Resp`.
    fn call<Req, Resp>(
        &self,
        route: &str,
        req: &Req,
    ) -> impl Future<Output = Result<Resp, Self::Error>> + Send
    where
        Req: Message,
        Resp: Message + Default;
}

impl Caller for Ctx {
    type Error = Code;

    fn call<Req, Resp>(&self, route: &str, req: &Req) -> impl Future<Output = Result<Resp, Code>> + Send
    where
        Req: Message,
        Resp: Message + Default,
    {
        Ctx::call(self, route, req)
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
        self.0.host().bind_user(&self.0, user).await
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
        self.0.host().push(&self.0, users.to_vec(), route, &M::full_name(), body).await
    }

    /// Pushes `msg` as route `route` (`seq` 0) to this request's own session, logged in or not
    /// (a login challenge, a queue position): false when the session has ended.
    ///
    /// # Errors
    /// `BAD_REQUEST` as for [`Ctx::push`]; `UNAVAILABLE` when the session's gateway cannot be
    /// reached.
    pub async fn push_session<M: Message + Name>(&self, route: &str, msg: &M) -> Result<bool, Code> {
        let pushed = self.push_sessions(std::slice::from_ref(&self.request().session), route, msg).await?;
        Ok(pushed.delivered == 1)
    }

    /// Pushes `msg` as route `route` (`seq` 0) to each of `sessions` (kept from the requests
    /// that came from them: `ctx.request().session`), logged in or not: one message per gateway
    /// holding any, without looking anyone up in the session store. The way a room reaches its
    /// members; the answer says which sessions have ended ([`SessionsPushed::gone`]).
    ///
    /// # Errors
    /// `BAD_REQUEST` as for [`Ctx::push`].
    pub async fn push_sessions<M: Message + Name>(
        &self,
        sessions: &[Session],
        route: &str,
        msg: &M,
    ) -> Result<SessionsPushed, Code> {
        let body = Bytes::from(msg.encode_to_vec());
        self.0.host().push_sessions(&self.0, sessions.to_vec(), route, &M::full_name(), body).await
    }

    /// Has this request's session hold `will` under `key` at its gateway: the gateway pushes it to
    /// the session if it loses this worker (it died) before the will is dropped
    /// ([`Ctx::revoke_wills`]) or the session ends. A room leaves one for each member (see
    /// [`crate::room`]). A failure (the gateway cannot be reached, a route no proto declares) is
    /// logged: the session then learns of a lost worker only by its own requests' `UNAVAILABLE`.
    pub async fn leave_will(&self, key: &str, will: &Will) {
        let (route, message, body) = (&*will.route, &*will.message, will.body.clone());
        let sessions = vec![self.request().session.clone()];
        if let Err(code) = self.0.host().wills(&self.0, sessions, key, Some((route, message, body))).await {
            self.warn(format_args!("cannot leave will {key} at the session's gateway: {code:?}"));
        }
    }

    /// Drops the wills `sessions` hold under `key` for this worker (see [`Ctx::leave_will`]).
    /// A failure is logged.
    pub async fn revoke_wills(&self, key: &str, sessions: &[Session]) {
        if sessions.is_empty() {
            return;
        }
        if let Err(code) = self.0.host().wills(&self.0, sessions.to_vec(), key, None).await {
            self.warn(format_args!("cannot drop will {key} at the gateways: {code:?}"));
        }
    }

    /// Kicks `user`'s session with `reason` (it gets `sys.kick` and is closed); false when `user`
    /// is offline.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the session store or the user's gateway cannot be reached.
    pub async fn kick(&self, user: u64, reason: Code) -> Result<bool, Code> {
        self.0.host().kick(&self.0, user, reason).await
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
        self.0.host().online(&self.0, users.to_vec()).await
    }
}

/// The runtime, through the host: module code never names tokio itself, so the same code runs
/// linked into `mortar` or loaded from a library (whose copy of tokio has no runtime).
impl Ctx {
    /// Runs `task` in the background on the host's runtime. A panic in it ends it and is logged
    /// with this request's route and trace id; the node stays up.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let ctx = self.clone();
        self.0.host().spawn(Box::pin(async move {
            if let Err(message) = mortar_abi::panic::catch(task).await {
                ctx.0.panicked(PanicSite::Task, &message);
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
        self.0
            .host()
            .blocking(Box::new(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
            }))
            .await;
        let result = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match result {
            Some(Ok(value)) => Ok(value),
            Some(Err(panic)) => {
                self.panicked(&mortar_abi::panic::message(&*panic));
                Err(Code::INTERNAL)
            }
            None => Err(Code::INTERNAL),
        }
    }

    /// Whether the node is stopping: a task from [`Ctx::spawn`] that loops (a room's tick, a
    /// poller) checks it and ends, or the node's stop waits `worker.shutdown_grace_ms` for it.
    pub fn stopping(&self) -> bool {
        self.0.host().stopping()
    }

    /// Completes after `duration`.
    pub async fn sleep(&self, duration: Duration) {
        self.0.host().sleep(duration).await;
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.0.host().now()
    }

    /// Writes `message` to the node's log at `level`, with this request's route, session, user and
    /// trace id (target `module`: `RUST_LOG=module=debug` shows every module's debug lines). The
    /// way to log from module code: a module loaded from a library has its own copy of `tracing`,
    /// which reaches no subscriber.
    ///
    /// ```ignore
    /// ctx.log(Level::Info, format_args!("board {board} closed period {period}"));
    /// ```
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        self.0.host().log(self.0.request(), level, &message.to_string());
    }

    /// [`Ctx::log`] at [`Level::Info`].
    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    /// [`Ctx::log`] at [`Level::Warn`].
    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }

    /// [`Ctx::log`] at [`Level::Error`].
    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }

    /// Reports a panic of this request's handler to the host.
    fn panicked(&self, message: &str) {
        self.0.panicked(PanicSite::Handler, message);
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("request", self.0.request()).finish_non_exhaustive()
    }
}

impl Ctx {
    /// The invocation this context wraps, as the host handed it over.
    #[doc(hidden)]
    pub fn invocation(&self) -> &Invocation {
        &self.0
    }
}
