//! Layers as a module declares them (the SDK's `layer!` writes the declaration), the route
//! patterns they name, and [`Next`], the rest of a route's chain as the host runs it.

use crate::{
    host::Invocation,
    route::{HandlerFn, HandlerFuture},
};
use bytes::Bytes;
use std::sync::Arc;
/// A layer behind its glue.
pub type LayerFn = fn(Invocation, Bytes, Next) -> HandlerFuture;

/// A layer, as `mortar::layer!` registers it.
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
    pub fn run(self, invocation: Invocation, body: Bytes) -> HandlerFuture {
        match self.layers.get(self.at).copied() {
            Some(layer) => layer(invocation, body, Next { at: self.at + 1, ..self }),
            None => (self.handler)(invocation, body),
        }
    }
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
