//! Routes: a `main.sub` name bound to a handler, registered through `inventory` by
//! [`#[handler]`](crate::handler).

use crate::{code::Code, ctx::BoxFuture, ctx::Ctx};
use bytes::Bytes;
use prost::{Message, Name};
use std::future::Future;

/// What a handler's glue returns: the encoded reply, or the code to answer with.
pub type HandlerFuture = BoxFuture<Result<Bytes, Code>>;

/// A handler behind its glue: takes the encoded request, gives the encoded reply.
pub type HandlerFn = fn(Ctx, Bytes) -> HandlerFuture;

/// The full proto names of a route's request and reply types, e.g. `("echo.EchoReq", "echo.EchoResp")`.
pub type MessageTypes = (String, String);

/// Who may reach a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Clients (through a gateway) and other modules.
    Client,
    /// Only other modules, through [`Ctx::call`]; a client asking for it gets `NO_ROUTE`.
    Internal,
}

/// One route, as [`#[handler]`](crate::handler) registers it.
#[derive(Debug)]
pub struct Route {
    /// `main.sub`; `main` is the module's name.
    pub path: &'static str,
    /// Who may reach it.
    pub access: Access,
    /// The handler behind its decode/encode glue.
    pub handler: HandlerFn,
    /// The request and reply types, for checking the route against the proto contract.
    pub types: fn() -> MessageTypes,
    /// Where the handler is defined (`crate::module::fn`), for error messages.
    pub defined_at: &'static str,
}

impl Route {
    /// The module part of the path.
    pub fn module(&self) -> &'static str {
        self.path.split_once('.').map_or(self.path, |(main, _)| main)
    }
}

inventory::collect!(Route);

/// Every route linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static Route> {
    inventory::iter::<Route>.into_iter()
}

/// The glue [`#[handler]`](crate::handler) generates: decodes `body` as `Req` (answering
/// `BAD_REQUEST` without calling `handler` when it does not decode), runs `handler`, encodes its
/// reply.
#[doc(hidden)]
pub fn dispatch<Req, Resp, F, Fut>(ctx: Ctx, body: Bytes, handler: F) -> HandlerFuture
where
    Req: Message + Default + Send + 'static,
    Resp: Message,
    F: FnOnce(Ctx, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Code>> + Send + 'static,
{
    match Req::decode(body) {
        Ok(req) => Box::pin(async move {
            let resp = handler(ctx, req).await?;
            Ok(Bytes::from(resp.encode_to_vec()))
        }),
        Err(_) => Box::pin(std::future::ready(Err(Code::BAD_REQUEST))),
    }
}

/// The request and reply type names of a handler, read from its signature.
#[doc(hidden)]
pub fn message_types<Req, Resp, F, Fut>(_handler: F) -> MessageTypes
where
    Req: Name,
    Resp: Name,
    F: FnOnce(Ctx, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Code>>,
{
    (Req::full_name(), Resp::full_name())
}
