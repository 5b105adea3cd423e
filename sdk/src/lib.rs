//! The mortar SDK: everything a module author touches, and nothing of the host.
//!
//! The contract between host and module code (declarations, the `Host` and backend traits, the
//! library fingerprint) is `mortar-abi`'s; this crate re-exports what of it a module author names
//! and adds the typed side: [`Ctx`], typed handlers, [`store::Store`], [`cache::Cache`], macros.
//!
//! A module is one crate: `proto/echo.proto` declares its routes (`service Echo { rpc Say(EchoReq)
//! returns (EchoResp); }` is route `echo.say`), `build.rs` compiles it
//! (`mortar::build::compile_protos()`, feature `build`), and `src/lib.rs` is the module:
//!
//! ```ignore
//! use mortar::prelude::*;
//!
//! pub mod echo {
//!     mortar::include_proto!("echo");
//! }
//! use echo::{EchoReq, EchoResp};
//!
//! mortar::module!("echo");
//! mortar::export_module!(); // only to load it from a shared library too
//!
//! #[mortar::handler("echo.say", public)]
//! async fn say(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
//!     Ok(EchoResp { text: req.text })
//! }
//! ```
//!
//! `docs/writing-a-module.md` walks through it from `cargo new`; `docs/dynamic-modules.md` says
//! what a module loaded from a library may and may not do.
//!
//! Layout:
//! - [`module`](mod@module): the [`Module`] trait, the [`module!`] macro that registers one, and
//!   [`include_proto!`] for its messages.
//! - [`route`]: routes as [`#[handler]`](handler) registers them, and the decode/encode glue.
//! - [`ctx`]: [`Ctx`], a handler's view of its request and of the host.
//! - [`layer`](mod@layer): middleware, layers a module wraps around handlers ([`layer!`]).
//! - [`code`]: [`Code`], the outcome a client sees, and [`Failure`], a code with its reason.
//! - [`config`](mod@config): a module's own config section, `[modules.<name>]` ([`config!`]),
//!   through [`Ctx::config`].
//! - [`cache`]: values, counters and locks with TTLs, through [`Ctx::cache`].
//! - [`room`]: rooms, live game state on one worker with a tick and members ([`room::Rooms`]).
//! - [`job`](mod@job): scheduled jobs, once per period on one worker of the cluster ([`job!`]).
//! - [`table`](mod@table): game config tables, rows of JSON files typed in Rust ([`table!`]),
//!   through [`Ctx::table`].
//! - [`store`]: documents ([`store::Document`]), versions and compare-and-set, through
//!   [`Ctx::store`].
//! - [`dynamic`]: the entry point [`export_module!`] generates for loading from a library.
//! - [`future`]: `BoxFuture`, the future type between the host and the SDK.
//! - `build` (feature `build`): compiles a module crate's protos in its build script.
//! - [`pb`]: the envelope and `sys.*` messages (`mortar-pb`).

#[cfg(feature = "build")]
pub mod build;
pub mod cache;
pub mod code;
pub mod config;
pub mod ctx;
pub mod dynamic;
pub mod future;
pub mod job;
pub mod layer;
pub mod module;
#[doc(hidden)]
pub mod proto_check;
pub mod room;
pub mod route;
pub mod store;
pub mod table;

pub use code::{Code, Failure};
pub use ctx::{Caller, Ctx, Level, Session};
pub use module::Module;
pub use mortar_macros::{Document, handler};
pub use mortar_pb as pb;

#[doc(hidden)]
pub use bytes;
#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use mortar_abi as abi;
pub use prost;
pub use serde;

/// What most modules import.
pub mod prelude {
    pub use crate::{
        Code, Ctx, Failure, Module,
        store::{Document, Index, Versioned},
    };
    pub use mortar_macros::Document;
}
