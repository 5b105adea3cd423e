//! [`Module`]: a feature of the game (login, inventory, mail…) and its routes.

use crate::{future::BoxFuture, host::Invocation};
use std::{
    any::Any,
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

/// A module: a named group of routes with a lifecycle, and its state on a node.
///
/// Its routes are the `#[mortar::handler]`s whose route starts with its name. A node
/// serves a module's routes only when its config enables the module. Each node that enables it
/// makes one instance, which its handlers reach with `Ctx::module`: state a module keeps there
/// (locks, counters, caches of its own) is the node's, never a process-wide static.
pub trait Module: Any + Send + Sync + 'static {
    /// The module's name: the `main` of its routes. Lower-case.
    fn name(&self) -> &'static str;

    /// Runs once when the node stops, after it has stopped serving requests.
    fn on_stop(&self) {}

    /// The module's own instance, for `Ctx::module` (the host keeps modules behind a guard).
    #[doc(hidden)]
    fn instance(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
}

/// Why a module could not start.
#[derive(Debug)]
pub struct ModuleError(pub String);

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModuleError {}

/// A module as `mortar::module!` registers it.
#[derive(Debug)]
pub struct ModuleDecl {
    /// Makes the module; called once per node that enables it.
    pub build: fn() -> Box<dyn Module>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
    /// Runs when a player comes online, behind its glue (see `mortar::module!`).
    pub on_online: Option<PresenceHook>,
    /// Runs when a player goes offline, behind its glue (see `mortar::module!`).
    pub on_offline: Option<PresenceHook>,
    /// Runs once when a node that enables the module starts, before it serves any request, behind
    /// its glue (see `mortar::module!`). An error stops the node's start.
    pub on_start: Option<StartHook>,
}

/// An `on_start` hook behind its glue: gets a context of the node (no session, no user; its
/// route is `MODULE.on_start`).
pub type StartHook = fn(Invocation) -> BoxFuture<Result<(), ModuleError>>;

/// An `on_online` or `on_offline` hook behind its glue: gets the context of the player's session
/// (the one that logged in, or the one that ended; its user is the player) and the player's user
/// id.
pub type PresenceHook = fn(Invocation, u64) -> BoxFuture<()>;

inventory::collect!(ModuleDecl);

/// Every module linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static ModuleDecl> {
    inventory::iter::<ModuleDecl>.into_iter()
}

/// The protos of a module crate, as `mortar::include_proto!` registers them: the
/// encoded `FileDescriptorSet` of every file in the crate's `proto/` folder.
#[derive(Debug)]
pub struct Protos {
    /// The encoded descriptor set.
    pub descriptors: &'static [u8],
    /// Where they are included (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(Protos);

/// The protos of every module crate linked into this program, in no particular order (a crate
/// including several packages appears once per package, with the same bytes).
pub fn protos() -> impl Iterator<Item = &'static Protos> {
    inventory::iter::<Protos>.into_iter()
}

/// Makes the module `decl` declares, turning a panic in its constructor into an error, and
/// wrapping it so a panic in its hooks is an error or a log line too: a panic must never unwind
/// out of a library into the host, whose runtime cannot catch it.
///
/// # Errors
/// When the constructor panics.
pub fn build(decl: &ModuleDecl) -> Result<Box<dyn Module>, ModuleError> {
    let module: Arc<dyn Module> = catch_unwind(AssertUnwindSafe(decl.build))
        .map_err(|panic| {
            ModuleError(format!("its constructor panicked: {}", crate::panic::message(&*panic)))
        })?
        .into();
    Ok(Box::new(Guarded { name: module.name(), module }))
}

/// A module whose hooks cannot unwind.
struct Guarded {
    name: &'static str,
    module: Arc<dyn Module>,
}

impl Module for Guarded {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_stop(&self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.module.on_stop())) {
            eprintln!("mortar: module `{}`: on_stop panicked: {}", self.name, crate::panic::message(&*panic));
        }
    }

    fn instance(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        // Made here, on the module's side of a library boundary: its type is the module's own.
        Some(self.module.clone())
    }
}

/// A module with routes and no state or hooks: all it has is its name.
#[doc(hidden)]
pub struct Named(pub &'static str);

impl Module for Named {
    fn name(&self) -> &'static str {
        self.0
    }
}
