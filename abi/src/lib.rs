//! The contract between a mortar node and module code: what crosses from one to the other, also
//! across a shared-library boundary.
//!
//! Module authors use the SDK (`mortar`), which re-exports what of this they touch; the host
//! (`mortar-runtime`, `mortar-backends`) implements this and never names the SDK. Everything here
//! is either a declaration module code registers (routes, layers, modules, protos, config
//! sections, tables, document types), a trait the host implements ([`host::Host`],
//! [`store::StoreBackend`], [`cache::CacheBackend`]), or a value both sides read (codes, requests,
//! errors). [`dynamic::FINGERPRINT`] names this crate's source: a library built against another
//! copy of it is refused.
//!
//! Layout:
//! - [`code`]: [`Code`] and [`Failure`], what a reply carries.
//! - [`future`]: `BoxFuture`, the one future type that crosses.
//! - [`host`]: [`host::Host`], the node's services; [`host::Invocation`], a request and the host
//!   serving it, as module code receives it.
//! - [`route`], [`layer`], [`module`]: the declarations of routes, layers (with [`layer::Next`], the
//!   chain the host runs) and modules (the [`module::Module`] trait, presence hooks, protos).
//! - [`job`]: scheduled jobs, declared.
//! - [`config`], [`table`]: module config sections and game config tables, declared and decoded.
//! - [`store`], [`cache`]: document types and the backends' traits.
//! - [`dynamic`]: a library's entry point, its [`dynamic::Declaration`] and the fingerprint.
//! - `panic`: catching module code's panics on the module's side of the boundary.

pub mod cache;
pub mod code;
pub mod config;
pub mod dynamic;
pub mod future;
pub mod host;
pub mod job;
pub mod layer;
pub mod module;
#[doc(hidden)]
pub mod panic;
pub mod route;
pub mod store;
pub mod table;

pub use code::{Code, Failure};
#[doc(hidden)]
pub use inventory;
