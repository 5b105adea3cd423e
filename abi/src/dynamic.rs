//! Modules in shared libraries: the one entry point `mortar::export_module!`
//! generates, and what it declares.
//!
//! A library holds its own copy of every static, the SDK's included, so the host learns what a
//! library contains only through the [`Declaration`] its entry point returns: the library's
//! modules, routes, protos, layers, tables, config sections and document types, collected from
//! the library's own registries. Before reading anything else the host compares [`FINGERPRINT`]
//! with the library's: this crate's version and source, the compiler, the target, the
//! declaration's layout version and the entry point's signature. Only when they are equal are the
//! two sides' types the same types.
//!
//! What module code inside a library may and may not do is in `docs/dynamic-modules.md`: in
//! short, reach the runtime (spawn, sleep, time), storage, cache and other modules only through
//! `mortar::Ctx`, never tokio or another global directly.

use crate::{
    config::ConfigDecl,
    job::JobDecl,
    layer::Layer,
    module::{self, Module, ModuleDecl, ModuleError, Protos},
    route::Route,
    store::DocumentDecl,
    table::TableDecl,
};

/// The entry point a library exports is this followed by its crate's name
/// (`mortar_module_entry_v1_my_module` in `libmy_module.so`): a per-crate name, because module
/// crates linked into one binary must not define one symbol twice. The prefix names the layout
/// of [`LibraryEntry`]'s first two fields, which never change under it.
pub const ENTRY_SYMBOL_PREFIX: &str = "mortar_module_entry_v1_";

/// The entry point's signature; a symbol read with another type is undefined behaviour, so the
/// signature is part of the fingerprint.
pub const ENTRY_SIGNATURE: &str = "extern \"C\" fn() -> &'static LibraryEntry";

/// The version of [`Declaration`]'s layout, bumped whenever it or a type it holds changes (4: a
/// route's handler answers a [`Failure`](crate::code::Failure), a code with a reason, not a bare code;
/// the declaration lists the library's document types; 6: jobs, an async `on_start` hook, `Host::log`).
pub const LAYOUT_VERSION: u32 = 6;

/// This build's ABI fingerprint: a library is loaded only by a host whose fingerprint is equal.
pub const FINGERPRINT: &str = concat!(
    "mortar-abi ",
    env!("CARGO_PKG_VERSION"),
    " (source ",
    env!("MORTAR_ABI_SOURCE"),
    "); ",
    env!("MORTAR_ABI_RUSTC"),
    "; target ",
    env!("MORTAR_ABI_TARGET"),
    "; declaration layout 6; entry extern \"C\" fn() -> &'static LibraryEntry",
);

/// What the entry point returns. `#[repr(C)]`, and its first two fields never change under
/// [`ENTRY_SYMBOL_PREFIX`]: a host reads the fingerprint before it trusts anything else.
#[repr(C)]
#[derive(Debug)]
pub struct LibraryEntry {
    /// The first byte of the library's fingerprint (UTF-8).
    pub fingerprint: &'static u8,
    /// Its length in bytes.
    pub fingerprint_len: usize,
    /// What the library declares; called only once the fingerprints are equal.
    pub declaration: fn() -> Declaration,
}

/// What a library contains, collected from its own registries.
#[derive(Debug)]
pub struct Declaration {
    /// Its modules.
    pub modules: Vec<&'static ModuleDecl>,
    /// Makes one of them: the library's [`module::build`], so a panic is caught on the side that
    /// raised it.
    pub build: fn(&ModuleDecl) -> Result<Box<dyn Module>, ModuleError>,
    /// Its routes.
    pub routes: Vec<&'static Route>,
    /// Its protos.
    pub protos: Vec<&'static Protos>,
    /// Its layers.
    pub layers: Vec<&'static Layer>,
    /// Its game config tables.
    pub tables: Vec<&'static TableDecl>,
    /// Its modules' config sections.
    pub configs: Vec<&'static ConfigDecl>,
    /// Its document types.
    pub documents: Vec<&'static DocumentDecl>,
    /// Its scheduled jobs.
    pub jobs: Vec<&'static JobDecl>,
}

static ENTRY: LibraryEntry = LibraryEntry {
    fingerprint: &FINGERPRINT.as_bytes()[0],
    fingerprint_len: FINGERPRINT.len(),
    declaration: declare,
};

/// The entry `mortar::export_module!` returns.
#[doc(hidden)]
pub fn entry() -> &'static LibraryEntry {
    &ENTRY
}

/// Everything registered in this copy of the SDK. Called by a host that loaded this library, so
/// this copy of the standard library's panic hook is set to one line on stderr: the host logs
/// each caught panic itself, with its route and trace id.
fn declare() -> Declaration {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("mortar: panic in a module library{location}: {}", crate::panic::message(info.payload()));
    }));
    Declaration {
        modules: module::registered().collect(),
        build: module::build,
        routes: crate::route::registered().collect(),
        protos: module::protos().collect(),
        layers: crate::layer::registered().collect(),
        tables: crate::table::registered().collect(),
        configs: crate::config::registered().collect(),
        documents: crate::store::registered().collect(),
        jobs: crate::job::registered().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_names_every_part() {
        assert!(FINGERPRINT.starts_with(concat!("mortar-abi ", env!("CARGO_PKG_VERSION"))));
        assert!(FINGERPRINT.contains("; rustc "), "{FINGERPRINT}");
        assert!(FINGERPRINT.contains(&format!("declaration layout {LAYOUT_VERSION};")), "{FINGERPRINT}");
        assert!(FINGERPRINT.ends_with(ENTRY_SIGNATURE), "{FINGERPRINT}");
        let entry = entry();
        assert_eq!(entry.fingerprint_len, FINGERPRINT.len());
        assert!(ENTRY_SYMBOL_PREFIX.ends_with("_v1_"));
    }
}
