//! [`Module`]: a feature of the game (login, inventory, mail…) and its routes.

use std::fmt;

/// A module: a named group of routes with a lifecycle.
///
/// Its routes are the [`#[handler]`](crate::handler)s whose route starts with its name. A node
/// serves a module's routes only when its config enables the module.
pub trait Module: Send + Sync + 'static {
    /// The module's name: the `main` of its routes. Lower-case.
    fn name(&self) -> &'static str;

    /// Runs once when a node that enables the module starts, before it serves any request.
    ///
    /// # Errors
    /// An error stops the node's start, with this module's name and the error.
    fn on_start(&self) -> Result<(), ModuleError> {
        Ok(())
    }

    /// Runs once when the node stops, after it has stopped serving requests.
    fn on_stop(&self) {}
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

/// A module as [`module!`](macro@crate::module) registers it.
#[derive(Debug)]
pub struct ModuleDecl {
    /// Makes the module; called once per node that enables it.
    pub build: fn() -> Box<dyn Module>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(ModuleDecl);

/// Every module linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static ModuleDecl> {
    inventory::iter::<ModuleDecl>.into_iter()
}

/// A module with routes and no state or hooks: all it has is its name.
#[doc(hidden)]
pub struct Named(pub &'static str);

impl Module for Named {
    fn name(&self) -> &'static str {
        self.0
    }
}

/// Declares a module.
///
/// `mortar::module!("echo");` declares a module with routes only. `mortar::module!(Pack);`
/// declares one whose type implements [`Module`] and [`Default`], for modules with hooks.
#[macro_export]
macro_rules! module {
    ($name:literal) => {
        $crate::inventory::submit! {
            $crate::module::ModuleDecl {
                build: || ::std::boxed::Box::new($crate::module::Named($name)),
                defined_at: module_path!(),
            }
        }
    };
    ($module:ty) => {
        $crate::inventory::submit! {
            $crate::module::ModuleDecl {
                build: || ::std::boxed::Box::new(<$module as ::std::default::Default>::default()),
                defined_at: module_path!(),
            }
        }
    };
}
