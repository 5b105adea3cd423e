//! Modules in shared libraries: [`export_module!`](crate::export_module) and the entry point it
//! exports (the contract itself is `mortar-abi`'s, re-exported here).

pub use mortar_abi::dynamic::*;

/// Exports the crate's modules for loading from a shared library (`crate-type = ["cdylib"]`):
/// one `extern "C"` entry point, [`ENTRY_SYMBOL_PREFIX`] and the crate's name, returning the
/// crate's [`LibraryEntry`]. Linked into a binary instead, the entry point is unused and harmless.
///
/// Write it once, at the crate root: `mortar::export_module!();`
#[macro_export]
macro_rules! export_module {
    () => {
        /// The entry point a mortar node loads this library through.
        #[allow(unsafe_code)]
        #[unsafe(export_name = concat!("mortar_module_entry_v1_", env!("CARGO_CRATE_NAME")))]
        pub extern "C" fn mortar_module_entry() -> &'static $crate::dynamic::LibraryEntry {
            $crate::dynamic::entry()
        }
    };
}
