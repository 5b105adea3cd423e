//! Module config sections as a module declares them (the SDK's `config!` writes the
//! declaration) and their decoded values, as the host keeps them per node.

use std::{any::Any, sync::Arc};

/// A config section's values as a node keeps them: the module's own type behind `Any`.
pub type Values = Arc<dyn Any + Send + Sync>;

/// A config section as the SDK's `config!` registers it, for the node to fill.
#[derive(Debug)]
pub struct ConfigDecl {
    /// The section's name.
    pub section: &'static str,
    /// Decodes and checks the section given as JSON (none: the defaults); see the SDK's `decode`.
    pub load: fn(Option<&str>) -> Result<Values, String>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(ConfigDecl);

/// Every config section linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static ConfigDecl> {
    inventory::iter::<ConfigDecl>.into_iter()
}
