//! Routes as a module declares them: a `main.sub` name bound to a handler behind its glue,
//! registered through `inventory` (the SDK's `#[handler]` writes the declaration).

use crate::{code::Failure, future::BoxFuture, host::Invocation};
use bytes::Bytes;

/// What a handler's glue returns: the encoded reply, or the code (and reason) to answer with.
pub type HandlerFuture = BoxFuture<Result<Bytes, Failure>>;

/// A handler behind its glue: takes the encoded request, gives the encoded reply.
pub type HandlerFn = fn(Invocation, Bytes) -> HandlerFuture;

/// The full proto names of a route's request and reply types, e.g. `("echo.EchoReq", "echo.EchoResp")`.
pub type MessageTypes = (String, String);

/// Who may reach a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Logged-in clients (through a gateway) and other modules; a client that has not logged in
    /// gets `NOT_LOGGED_IN`. The default.
    Client,
    /// Every client, logged in or not (`#[handler("user.login", public)]`), and other modules.
    Public,
    /// Only other modules, through `Ctx::call`; a client asking for it gets `NO_ROUTE`.
    Internal,
}

/// One route, as `#[mortar::handler]` registers it.
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
    /// The request field whose value routes it (`#[handler("arena.move", key = room_id)]`):
    /// requests with one value of the field reach one worker among those serving the module,
    /// whoever sends them, instead of the sender's worker. `None`: routed by the player.
    pub key: Option<&'static str>,
}

impl Route {
    /// Whether clients may reach it (logged in or not, see [`Access`]).
    pub fn is_for_clients(&self) -> bool {
        self.access != Access::Internal
    }

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
