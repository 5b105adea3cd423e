//! Middleware: layers a module wraps around handlers, for the routes they name, in order.
//!
//! A layer is an `async fn(ctx: Ctx, body: Bytes, next: Next) -> Result<Bytes, Failure>`: it sees
//! the encoded request, may answer it itself (a code, with or without a reason, without calling
//! `next`), or runs the rest of the chain with `next.run(ctx, body)` and may look at or change the
//! encoded reply; a failure of the chain (its code and reason) passes through it as any value
//! does. A layer that never passes on the chain's failure may return `Result<Bytes, Code>`.
//!
//! ```
//! use mortar::{Ctx, Failure, layer::{Bytes, Next}};
//! mortar::module!("audit");
//! mortar::layer!(name = "audit_slow", routes = ["pack.*", "mail.claim"], order = 0, run = slow);
//!
//! /// Logs the requests that take longer than 100 ms.
//! async fn slow(ctx: Ctx, body: Bytes, next: Next) -> Result<Bytes, Failure> {
//!     let started = std::time::Instant::now();
//!     let reply = next.run(ctx.clone(), body).await;
//!     if started.elapsed() > std::time::Duration::from_millis(100) {
//!         eprintln!("slow: {} took {:?}", ctx.request().route, started.elapsed());
//!     }
//!     reply
//! }
//! ```
//!
//! Route patterns: `*` (every route the node serves), `main.*` (a module's), `main.sub`. A node's
//! config can move or switch off a layer without touching its module: `[worker.layers]
//! audit_slow = ["pack.*"]`, or `= []`. Layers run after the host's own steps (the login check,
//! the request's span and metrics), for client requests and for internal calls alike
//! (`ctx.request().depth` tells them apart), lowest `order` outermost, then by name.

use crate::{
    code::{Code, Failure},
    ctx::Ctx,
    route::HandlerFuture,
};
pub use bytes::Bytes;
use mortar_abi::{
    host::{Invocation, PanicSite},
    panic,
};
use std::future::Future;

pub use mortar_abi::layer::{Layer, LayerFn, is_pattern, matches, registered};

/// The rest of a route's chain after this layer: the layers after it, then the handler.
#[derive(Clone, Debug)]
pub struct Next(mortar_abi::layer::Next);

impl Next {
    /// Runs the rest of the chain on `body`: the next layer, or the handler.
    pub fn run(self, ctx: Ctx, body: Bytes) -> HandlerFuture {
        self.0.run(ctx.into(), body)
    }
}

/// The glue [`layer!`](crate::layer!) generates: runs the layer, and answers `INTERNAL` (reported
/// to the host) when it panics, on this side of a library boundary.
#[doc(hidden)]
pub fn glue<E, F, Fut>(
    invocation: Invocation,
    body: Bytes,
    next: mortar_abi::layer::Next,
    layer: F,
) -> HandlerFuture
where
    E: Into<Failure>,
    F: FnOnce(Ctx, Bytes, Next) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
{
    Box::pin(async move {
        let reporter = invocation.clone();
        match panic::catch(layer(Ctx::from(invocation), body, Next(next))).await {
            Ok(reply) => reply.map_err(Into::into),
            Err(message) => {
                reporter.panicked(PanicSite::Handler, &message);
                Err(Code::INTERNAL.into())
            }
        }
    })
}

/// Registers a layer (see the [module docs](self)):
///
/// `mortar::layer!(name = "audit_slow", routes = ["pack.*"], order = 0, run = slow);`
#[macro_export]
macro_rules! layer {
    (name = $name:literal, routes = [$($route:literal),* $(,)?], order = $order:expr, run = $run:path $(,)?) => {
        $crate::inventory::submit! {
            $crate::layer::Layer {
                name: $name,
                routes: &[$($route),*],
                order: $order,
                run: |invocation, body, next| $crate::layer::glue(invocation, body, next, $run),
                defined_at: module_path!(),
            }
        }
    };
}
