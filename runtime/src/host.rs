//! What handlers ask of the host ([`Host`]), for the worker's [`Core`]: the store, cache and
//! players, calls to other modules (here, or on the worker that serves them), the runtime, and
//! the reports of panics.

use super::{Core, InternalCall, MAX_CALL_DEPTH};
use bytes::Bytes;
use mortar_abi::route::Route;
use mortar_abi::{
    Code, Failure,
    cache::CacheBackend,
    future::BoxFuture,
    host::{Host, Invocation, Level, PanicSite, Pushed, Request, Session, SessionsPushed},
    store::StoreBackend,
};
use mortar_cluster::rpc::Wills;
use mortar_cluster::rpc::rendezvous;
use mortar_telemetry::metrics as m;
use mortar_telemetry::trace;
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

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

    fn call(&self, from: &Invocation, path: &str, body: Bytes) -> BoxFuture<Result<Bytes, Failure>> {
        let request = from.request();
        let caller = request.route;
        if request.depth >= MAX_CALL_DEPTH {
            tracing::error!(%caller, callee = %path, "internal calls nest too deep");
            return Box::pin(std::future::ready(Err(Code::INTERNAL.into())));
        }
        let Some((main, sub)) = path.split_once('.') else {
            return Box::pin(std::future::ready(Err(Code::NO_ROUTE.into())));
        };
        let Some(route) = self.routes.get(main, sub) else {
            return self.remote_call(request, main, sub, body);
        };
        // A route routed by a request field runs on the worker owning the field's value among
        // all serving its module, this one included: where gateways relay the same value.
        let key = self.routes.key_field(route.path).and_then(|field| rendezvous::field_key(&body, field));
        let (Some(key), Some(workers)) = (key, self.workers.clone()) else {
            return self.local_call(from, route, body);
        };
        let remote = self.remote_call(request, main, sub, body.clone());
        let local = self.local_call(from, route, body);
        let (main, deadline) = (main.to_owned(), request.deadline);
        Box::pin(async move {
            match workers.owns(&main, key, deadline).await {
                true => local.await,
                false => remote.await,
            }
        })
    }

    fn bind_user(&self, from: &Invocation, user: u64) -> BoxFuture<Result<(), Code>> {
        self.players.bind(from.request().session.clone(), user)
    }

    fn module(&self, name: &str) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.routes.instance(name)
    }

    fn config(&self, section: &str) -> Option<mortar_abi::config::Values> {
        self.routes.config(section)
    }

    fn table(&self, file: &str) -> Option<mortar_abi::table::Loaded> {
        self.routes.table(file)
    }

    fn push(
        &self,
        from: &Invocation,
        users: Vec<u64>,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>> {
        let Some((main, sub)) = self.declared_push(from, route, message) else {
            return Box::pin(std::future::ready(Err(Code::BAD_REQUEST)));
        };
        self.players.push(users, main.to_owned(), sub.to_owned(), body)
    }

    fn push_sessions(
        &self,
        from: &Invocation,
        to: Vec<Session>,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<SessionsPushed, Code>> {
        let Some((main, sub)) = self.declared_push(from, route, message) else {
            return Box::pin(std::future::ready(Err(Code::BAD_REQUEST)));
        };
        let to = to.into_iter().map(|session| (session.gateway, session.id)).collect();
        self.players.push_sessions(to, main.to_owned(), sub.to_owned(), body)
    }

    fn wills(
        &self,
        from: &Invocation,
        sessions: Vec<Session>,
        key: &str,
        will: Option<(&str, &str, Bytes)>,
    ) -> BoxFuture<Result<(), Code>> {
        let push = match will {
            Some((route, message, body)) => match self.declared_push(from, route, message) {
                Some((main, sub)) => Some((main.to_owned(), sub.to_owned(), body)),
                None => return Box::pin(std::future::ready(Err(Code::BAD_REQUEST))),
            },
            None => None,
        };
        let to = sessions.into_iter().map(|session| (session.gateway, session.id)).collect();
        let wills = Wills { worker: self.node_id.clone(), key: key.to_owned(), sessions: Vec::new(), push };
        self.players.wills(to, wills)
    }

    fn kick(&self, _: &Invocation, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        self.players.kick(user, reason)
    }

    fn online(&self, _: &Invocation, users: Vec<u64>) -> BoxFuture<Result<Vec<bool>, Code>> {
        let located = self.players.locate(users);
        Box::pin(async move { Ok(located.await?.iter().map(Option::is_some).collect()) })
    }

    fn spawn(&self, task: BoxFuture<()>) {
        self.tasks.spawn(task);
    }

    fn blocking(&self, work: Box<dyn FnOnce() + Send>) -> BoxFuture<()> {
        let (places, tasks) = (self.blocking.clone(), self.tasks.clone());
        Box::pin(async move {
            let Ok(place) = places.acquire_owned().await else { return };
            // The place is held by the work itself: a caller that stops waiting (its deadline)
            // does not free it while the work still runs.
            let _ = tasks
                .spawn_blocking(move || {
                    let _place = place;
                    work();
                })
                .await;
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn log(&self, request: &Request, level: Level, message: &str) {
        // One target for every module, so `RUST_LOG=module=debug` selects them all; the module is
        // the route's `main`.
        let module = request.route.split_once('.').map_or(request.route, |(main, _)| main);
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    target: "module",
                    $level,
                    node = %self.node_id,
                    module = %module,
                    route = request.route,
                    session = request.session.id,
                    user = request.session.user,
                    trace = %trace::display(request.trace_id),
                    "{message}"
                )
            };
        }
        match level {
            Level::Error => event!(tracing::Level::ERROR),
            Level::Warn => event!(tracing::Level::WARN),
            Level::Info => event!(tracing::Level::INFO),
            Level::Debug => event!(tracing::Level::DEBUG),
            Level::Trace => event!(tracing::Level::TRACE),
        }
    }

    fn stopping(&self) -> bool {
        self.jobs_stop.is_cancelled()
    }

    fn room_tick(&self, module: &str, late: Duration, overran: bool) {
        metrics::histogram!(m::ROOM_TICK_LATE, "module" => module.to_owned()).record(late);
        if overran {
            metrics::counter!(m::ROOM_TICK_OVERRUNS, "module" => module.to_owned()).increment(1);
        }
    }

    fn panicked(&self, request: &Request, site: PanicSite, message: &str) {
        metrics::counter!(m::HANDLER_PANICS, "route" => request.route).increment(1);
        let what = match site {
            PanicSite::Handler => "handler panicked; answered INTERNAL",
            PanicSite::Task => "task spawned by a handler panicked; it ended",
            PanicSite::Hook => "on_online or on_offline hook panicked; it ended",
            PanicSite::Start => "on_start hook panicked; the node does not start",
            PanicSite::Job => "scheduled job panicked; its run is tried again",
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

/// Pushes refused because no proto declares them, logged (see [`mortar_telemetry::log_limit`]).
static UNDECLARED_PUSHES: mortar_telemetry::log_limit::LogLimit =
    mortar_telemetry::log_limit::LogLimit::new(Duration::from_secs(1));

impl Core {
    /// Runs `route`, served here, for an internal call from `from`:
    /// the same path as a call from another node (layers, span, metrics). A panic in the handler
    /// is caught by the SDK's glue, on the module's side of a library boundary, and answered
    /// INTERNAL (see `Host::panicked`).
    fn local_call(
        &self,
        from: &Invocation,
        route: &'static Route,
        body: Bytes,
    ) -> BoxFuture<Result<Bytes, Failure>> {
        let Some(core) = self.me.upgrade() else {
            return Box::pin(std::future::ready(Err(Code::UNAVAILABLE.into())));
        };
        let request = from.request();
        let span = tracing::debug_span!(
            "call",
            node = %self.node_id,
            route = route.path,
            session = request.session.id,
            user = request.session.user,
            trace = %trace::display(request.trace_id),
        );
        let (ctx, deadline) = (from.for_call(route.path), request.deadline);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), core.run(route, ctx, body, span)).await {
                Ok(result) => result,
                Err(_) => Err(Code::TIMEOUT.into()),
            }
        })
    }

    /// Runs `main.sub` for an internal call of `request` on a worker of the cluster serving
    /// `main`; `NO_ROUTE` on a node without one.
    fn remote_call(
        &self,
        request: &Request,
        main: &str,
        sub: &str,
        body: Bytes,
    ) -> BoxFuture<Result<Bytes, Failure>> {
        let Some(workers) = self.workers.clone() else {
            tracing::warn!(caller = %request.route, callee = %format_args!("{main}.{sub}"), "internal call to a route this node does not serve");
            return Box::pin(std::future::ready(Err(Code::NO_ROUTE.into())));
        };
        let call = InternalCall {
            main: main.to_owned(),
            sub: sub.to_owned(),
            data: body,
            session: request.session.id,
            user: request.session.user,
            client_ip: request.session.ip,
            gateway: request.session.gateway.clone(),
            trace_id: request.trace_id,
            depth: request.depth + 1,
        };
        let deadline = request.deadline;
        Box::pin(async move {
            if Instant::now() >= deadline {
                return Err(Code::TIMEOUT.into());
            }
            let reply = workers.call(call, deadline).await;
            match (reply.code, reply.reason) {
                (0, _) => Ok(reply.data),
                (code, reason) if reason.is_empty() => Err(Code::from_wire(code).into()),
                (code, reason) => Err(Code::from_wire(code).because(reason)),
            }
        })
    }

    /// `route` split in `main` and `sub` when a loaded proto declares it with `message` as its
    /// rpc's output (a server-streaming rpc, or a request route whose push shares its reply
    /// type); else logs the module's mistake.
    fn declared_push<'a>(
        &self,
        from: &Invocation,
        route: &'a str,
        message: &str,
    ) -> Option<(&'a str, &'a str)> {
        let declared = self.routes.push_message(route);
        if declared == Some(message) {
            return route.split_once('.');
        }
        if let Some(not_logged_since) = UNDECLARED_PUSHES.allow() {
            let caller = from.request().route;
            match declared {
                Some(declared) => {
                    tracing::error!(%caller, %route, %message, %declared, not_logged_since, "push refused: its proto declares another message")
                }
                None => {
                    tracing::error!(%caller, %route, %message, not_logged_since, "push refused: no loaded proto declares this route (declare it as a server-streaming rpc)")
                }
            }
        }
        None
    }
}
