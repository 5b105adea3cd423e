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
    route::{HandlerFn, HandlerFuture},
};
pub use bytes::Bytes;
use std::{future::Future, sync::Arc};

/// A layer behind its glue.
pub type LayerFn = fn(Ctx, Bytes, Next) -> HandlerFuture;

/// A layer, as [`layer!`](crate::layer!) registers it.
#[derive(Debug)]
pub struct Layer {
    /// Its name: unique on a node, and the key that moves it in `worker.layers`.
    pub name: &'static str,
    /// The route patterns it wraps unless the node's config says otherwise.
    pub routes: &'static [&'static str],
    /// Lower runs first (outermost); equal orders run by name.
    pub order: i32,
    /// The layer behind its glue.
    pub run: LayerFn,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(Layer);

/// Every layer linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static Layer> {
    inventory::iter::<Layer>.into_iter()
}

/// Whether route `path` (`main.sub`) matches `pattern` (`*`, `main.*` or `main.sub`).
pub fn matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(main) => path.split_once('.').is_some_and(|(m, _)| m == main),
        None => pattern == path,
    }
}

/// Whether `pattern` is one [`matches()`] understands: `*`, `main.*` or `main.sub`, each part
/// lower-case ASCII letters, digits and `_` (as route names are). The node checks layers' and
/// its config's patterns with it.
pub fn is_pattern(pattern: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    pattern == "*"
        || pattern.split_once('.').is_some_and(|(main, sub)| part(main) && (sub == "*" || part(sub)))
}

/// The rest of a route's chain: the layers after this one, then the handler.
#[derive(Clone)]
pub struct Next {
    handler: HandlerFn,
    layers: Arc<[LayerFn]>,
    at: usize,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("remaining_layers", &(self.layers.len() - self.at)).finish()
    }
}

impl Next {
    /// The chain `layers` then `handler`; made by the host for each request.
    #[doc(hidden)]
    pub fn new(handler: HandlerFn, layers: Arc<[LayerFn]>) -> Self {
        Self { handler, layers, at: 0 }
    }

    /// Runs the rest of the chain on `body`: the next layer, or the handler.
    pub fn run(self, ctx: Ctx, body: Bytes) -> HandlerFuture {
        match self.layers.get(self.at).copied() {
            Some(layer) => layer(ctx, body, Next { at: self.at + 1, ..self }),
            None => (self.handler)(ctx, body),
        }
    }
}

/// The glue [`layer!`](crate::layer!) generates: runs the layer, and answers `INTERNAL` (reported
/// to the host) when it panics, on this side of a library boundary.
#[doc(hidden)]
pub fn glue<E, F, Fut>(ctx: Ctx, body: Bytes, next: Next, layer: F) -> HandlerFuture
where
    E: Into<Failure>,
    F: FnOnce(Ctx, Bytes, Next) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
{
    Box::pin(async move {
        let reporter = ctx.clone();
        match crate::panic::catch(layer(ctx, body, next)).await {
            Ok(reply) => reply.map_err(Into::into),
            Err(message) => {
                reporter.panicked(&message);
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
                run: |ctx, body, next| $crate::layer::glue(ctx, body, next, $run),
                defined_at: module_path!(),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::{is_pattern, matches};

    #[test]
    fn patterns_are_star_main_star_or_a_route() {
        for pattern in ["*", "pack.*", "pack.use", "pack_2.add_items"] {
            assert!(is_pattern(pattern), "{pattern}");
        }
        for pattern in ["", "pack", "pack.", ".use", "Pack.use", "pack.u*e", "*.use", "pack.use.x", "pack.**"]
        {
            assert!(!is_pattern(pattern), "{pattern}");
        }
    }

    #[test]
    fn patterns_match_every_route_a_module_or_one_route() {
        assert!(matches("*", "pack.use"));
        assert!(matches("pack.*", "pack.use"));
        assert!(!matches("pack.*", "packs.use"));
        assert!(matches("pack.use", "pack.use"));
        assert!(!matches("pack.use", "pack.query"));
    }
}
