//! The mortar SDK: everything a module author touches, and nothing of the host.
//!
//! A module is a name and a few typed handlers:
//!
//! ```
//! use mortar::prelude::*;
//! use mortar::pb::echo::{EchoReq, EchoResp};
//!
//! mortar::module!("echo");
//!
//! #[mortar::handler("echo.say")]
//! async fn say(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
//!     Ok(EchoResp { text: req.text })
//! }
//! ```
//!
//! Layout:
//! - [`module`](mod@module): the [`Module`] trait and the [`module!`] macro that registers one.
//! - [`route`]: routes as [`#[handler]`](handler) registers them, and the decode/encode glue.
//! - [`ctx`]: [`Ctx`], a handler's view of its request and of the host.
//! - [`code`]: [`Code`], the outcome a client sees.
//! - [`cache`]: values, counters and locks with TTLs, through [`Ctx::cache`].
//! - [`store`]: documents ([`store::Document`]), versions and compare-and-set, through
//!   [`Ctx::store`].
//! - [`pb`]: the proto contract (`mortar-pb`), for request and reply types.

pub mod cache;
pub mod code;
pub mod ctx;
pub mod module;
pub mod route;
pub mod store;

pub use code::Code;
pub use ctx::{Ctx, Session};
pub use module::Module;
pub use mortar_macros::{Document, handler};
pub use mortar_pb as pb;

#[doc(hidden)]
pub use bytes;
#[doc(hidden)]
pub use inventory;
pub use prost;
pub use serde;

/// What most modules import.
pub mod prelude {
    pub use crate::{
        Code, Ctx, Module,
        store::{Document, Index, Versioned},
    };
    pub use mortar_macros::Document;
}
