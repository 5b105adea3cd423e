//! What handlers ask of the host ([`Host`]), for the worker's [`Core`]: the store, cache and
//! players, calls to other modules (here, or on the worker that serves them), the runtime, and
//! the reports of panics.

use super::{Core, InternalCall, MAX_CALL_DEPTH};
use bytes::Bytes;
use mortar_abi::{
    Code, Failure,
    cache::CacheBackend,
    future::BoxFuture,
    host::{Host, Invocation, Level, PanicSite, Pushed, Request},
    store::StoreBackend,
};
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
        let deadline = request.deadline;
        if let Some(route) = self.routes.get(main, sub) {
            // The same path as a call from another node: layers, span, metrics. A panic in the
            // handler is caught by the SDK's glue, on the module's side of a library boundary,
            // and answered INTERNAL (see `Host::panicked`).
            let Some(core) = self.me.upgrade() else {
                return Box::pin(std::future::ready(Err(Code::UNAVAILABLE.into())));
            };
            let span = tracing::debug_span!(
                "call",
                node = %self.node_id,
                route = route.path,
                session = request.session.id,
                user = request.session.user,
                trace = %trace::display(request.trace_id),
            );
            let ctx = from.for_call(route.path);
            return Box::pin(async move {
                match tokio::time::timeout_at(deadline.into(), core.run(route, ctx, body, span)).await {
                    Ok(result) => result,
                    Err(_) => Err(Code::TIMEOUT.into()),
                }
            });
        }
        let Some(workers) = self.workers.clone() else {
            tracing::warn!(%caller, callee = %path, "internal call to a route this node does not serve");
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

    fn push_session(
        &self,
        from: &Invocation,
        route: &str,
        message: &str,
        body: Bytes,
    ) -> BoxFuture<Result<bool, Code>> {
        let Some((main, sub)) = self.declared_push(from, route, message) else {
            return Box::pin(std::future::ready(Err(Code::BAD_REQUEST)));
        };
        let session = &from.request().session;
        self.players.push_session(session.gateway.clone(), session.id, main.to_owned(), sub.to_owned(), body)
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
