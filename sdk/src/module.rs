//! [`Module`]: a feature of the game (login, inventory, mail…) and its routes.

use crate::ctx::Ctx;
use mortar_abi::{
    future::BoxFuture,
    host::{Invocation, PanicSite},
    panic,
};

pub use mortar_abi::module::{
    Module, ModuleDecl, ModuleError, Named, PresenceHook, Protos, StartHook, build, protos, registered,
};

/// The glue [`module!`](macro@crate::module) generates for an `on_online` or `on_offline` hook:
/// runs it, and reports a panic to the host on this side of a library boundary.
#[doc(hidden)]
pub fn presence_hook<F, Fut>(invocation: Invocation, user: u64, hook: F) -> BoxFuture<()>
where
    F: FnOnce(Ctx, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::pin(async move {
        let reporter = invocation.clone();
        if let Err(message) = panic::catch(hook(Ctx::from(invocation), user)).await {
            reporter.panicked(PanicSite::Hook, &message);
        }
    })
}

/// The glue [`module!`](macro@crate::module) generates for an `on_start` hook: runs it, and turns
/// a panic into an error (reported to the host) on this side of a library boundary.
#[doc(hidden)]
pub fn start_hook<F, Fut, E>(invocation: Invocation, hook: F) -> BoxFuture<Result<(), ModuleError>>
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    Box::pin(async move {
        let reporter = invocation.clone();
        match panic::catch(hook(Ctx::from(invocation))).await {
            Ok(result) => result.map_err(|error| ModuleError(error.to_string())),
            Err(message) => {
                reporter.panicked(PanicSite::Start, &message);
                Err(ModuleError(format!("on_start panicked: {message}")))
            }
        }
    })
}

/// Includes the Rust types generated for proto package `package` by the crate's build script
/// (`mortar::build::compile_protos()`, feature `build`) and registers the crate's descriptor set
/// with its routes.
///
/// ```ignore
/// pub mod echo {
///     mortar::include_proto!("echo");
/// }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        $crate::import_proto!($package);

        $crate::inventory::submit! {
            $crate::module::Protos {
                descriptors: include_bytes!(concat!(env!("OUT_DIR"), "/mortar_protos.bin")),
                defined_at: module_path!(),
            }
        }
    };
}

/// Includes the Rust types and typed clients generated for proto package `package` of another
/// module, imported by the crate's build script (`mortar::build::Protos::new().import(…)`),
/// without registering them: the module that serves them does.
///
/// ```ignore
/// pub mod user {
///     mortar::import_proto!("user");
/// }
/// // In a handler:
/// let found = user::UserClient(&ctx).lookup(&user::LookupReq { user_ids }).await?;
/// ```
#[macro_export]
macro_rules! import_proto {
    ($package:literal) => {
        #[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        mod generated {
            include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
        }
        pub use generated::*;
    };
}

///
/// `mortar::module!("echo");` declares a module with routes only. `mortar::module!(Pack);`
/// declares one whose type implements [`Module`] and [`Default`], for modules with start and stop
/// hooks.
///
/// Either form takes, in this order, `on_start = s`, an `async fn(ctx: Ctx) -> Result<(), E>`
/// (`E: Display`), then `on_online = f` and `on_offline = g`, each an `async fn(ctx: Ctx, user: u64)`.
///
/// `on_start` runs once on each node that enables the module, before the node serves any
/// request, with a context of the node: no session or user, its route `MODULE.on_start`, the
/// module's store, cache, tables, config and instance (`ctx.module`), and
/// `worker.start_timeout_ms` as its deadline. An error stops the node's start, naming the module
/// and the error.
/// `on_online` runs each time a player logs in (the session is
/// bound, `Ctx::bind_user`); `on_offline` once each time a player goes offline: their session
/// ended while it was still their login (not when a newer login replaced it). Each runs on one
/// node serving the module (chosen by user), with the context of the player's session; what it
/// does (push to friends, save state) is not tied to a client request, and gets
/// `gateway.request_timeout_ms` as its deadline. An `on_online` of a short session may run after
/// its `on_offline`: use `ctx.is_online` where the order matters.
///
/// ```
/// use mortar::Ctx;
/// mortar::module!("lobby", on_online = came, on_offline = left);
///
/// async fn came(ctx: Ctx, user: u64) {
///     let _ = ctx.push(&[1, 2], "lobby.came", &format!("{user} came")).await;
/// }
///
/// async fn left(ctx: Ctx, user: u64) {
///     let _ = ctx.push(&[1, 2], "lobby.left", &format!("{user} left")).await;
/// }
/// ```
#[macro_export]
macro_rules! module {
    ($name:literal $(, on_start = $start:path)? $(, on_online = $online:path)? $(, on_offline = $offline:path)? $(,)?) => {
        $crate::module!(@submit || ::std::boxed::Box::new($crate::module::Named($name)),
            [$($start)?], [$($online)?], [$($offline)?]);
    };
    ($module:ty $(, on_start = $start:path)? $(, on_online = $online:path)? $(, on_offline = $offline:path)? $(,)?) => {
        $crate::module!(@submit || ::std::boxed::Box::new(<$module as ::std::default::Default>::default()),
            [$($start)?], [$($online)?], [$($offline)?]);
    };
    (@hook) => { None };
    (@hook $hook:path) => { Some(|invocation, user| $crate::module::presence_hook(invocation, user, $hook)) };
    (@start) => { None };
    (@start $hook:path) => { Some(|invocation| $crate::module::start_hook(invocation, $hook)) };
    (@submit $build:expr, [$($start:path)?], [$($online:path)?], [$($offline:path)?]) => {
        $crate::inventory::submit! {
            $crate::module::ModuleDecl {
                build: $build,
                defined_at: module_path!(),
                on_online: $crate::module!(@hook $($online)?),
                on_offline: $crate::module!(@hook $($offline)?),
                on_start: $crate::module!(@start $($start)?),
            }
        }
    };
}
