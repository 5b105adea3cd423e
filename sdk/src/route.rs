//! Routes: a `main.sub` name bound to a handler, registered through `inventory` by
//! [`#[handler]`](crate::handler).
//!
//! A handler is `async fn(Ctx, Req) -> Result<Resp, Code>`, or `-> Result<Resp, Failure>` when
//! it says why a request failed ([`Code::because`]); the attribute says so when it is neither:
//!
//! ```
//! use mortar::{Code, Ctx, Failure};
//! mortar::module!("doc");
//!
//! #[mortar::handler("doc.greet")]
//! async fn greet(_ctx: Ctx, name: String) -> Result<String, Code> {
//!     Ok(format!("hello {name}"))
//! }
//!
//! #[mortar::handler("doc.shout")]
//! async fn shout(_ctx: Ctx, name: String) -> Result<String, Failure> {
//!     if name.is_empty() {
//!         return Err(Code::BAD_REQUEST.because("name must not be empty"));
//!     }
//!     Ok(name.to_uppercase())
//! }
//! ```
//!
//! ```compile_fail
//! use mortar::Ctx;
//! // error: a handler is `async fn(ctx: Ctx, req: Req) -> Result<Resp, Code>` (or
//! // `Result<Resp, Failure>`), …: this one returns `Result<String, String>`
//! #[mortar::handler("doc.greet")]
//! async fn greet(_ctx: Ctx, name: String) -> Result<String, String> {
//!     Ok(format!("hello {name}"))
//! }
//! ```
//!
//! Types the compiler accepts but the module's protos do not declare for the route (`req: u32`)
//! are refused when a node starts, naming the route and both types.

use crate::{
    code::{Code, Failure},
    ctx::Ctx,
};
use bytes::Bytes;
use mortar_abi::{
    host::{Invocation, PanicSite},
    panic,
};
use prost::{Message, Name};
use std::future::Future;

pub use mortar_abi::route::{Access, HandlerFn, HandlerFuture, MessageTypes, Route, registered};

/// The glue [`#[handler]`](crate::handler) generates: decodes `body` as `Req` (answering
/// `BAD_REQUEST`, "body does not decode as `Req`'s proto name", without calling `handler` when it
/// does not decode), runs `handler`, encodes its reply. A panic in the handler is answered
/// `INTERNAL` (no reason: the detail is the host's to log) and reported to the host, on this side
/// of a library boundary.
#[doc(hidden)]
pub fn dispatch<Req, Resp, E, F, Fut>(invocation: Invocation, body: Bytes, handler: F) -> HandlerFuture
where
    Req: Message + Name + Default + Send + 'static,
    Resp: Message,
    E: Into<Failure>,
    F: FnOnce(Ctx, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, E>> + Send + 'static,
{
    let Ok(req) = Req::decode(body) else {
        let failure = Code::BAD_REQUEST.because(format!("body does not decode as {}", Req::full_name()));
        return Box::pin(std::future::ready(Err(failure)));
    };
    Box::pin(async move {
        let reporter = invocation.clone();
        match panic::catch(handler(Ctx::from(invocation), req)).await {
            Ok(result) => Ok(Bytes::from(result.map_err(Into::into)?.encode_to_vec())),
            Err(message) => {
                reporter.panicked(PanicSite::Handler, &message);
                Err(Code::INTERNAL.into())
            }
        }
    })
}

/// The request and reply type names of a handler, read from its signature.
#[doc(hidden)]
pub fn message_types<Req, Resp, E, F, Fut>(_handler: F) -> MessageTypes
where
    Req: Name,
    Resp: Name,
    E: Into<Failure>,
    F: FnOnce(Ctx, Req) -> Fut,
    Fut: Future<Output = Result<Resp, E>>,
{
    (Req::full_name(), Resp::full_name())
}
