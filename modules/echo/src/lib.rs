//! The echo demo module: `echo.say` answers the text it is sent; `echo.node` says which worker
//! node ran the request, `echo.room` which one holds a room (routed by the room, not the player);
//! the internal `echo.upper` and `echo.context` are there for other modules
//! to call. It is how small a module is: this file, `proto/echo.proto` and a one-line
//! `build.rs`.

use mortar::prelude::*;

/// The messages of `proto/echo.proto`.
pub mod echo {
    mortar::include_proto!("echo");
}

use echo::{ContextReq, ContextResp, EchoReq, EchoResp, NodeReq, NodeResp, RoomReq};

mortar::module!("echo");
mortar::export_module!();

/// Answers the request's text.
#[mortar::handler("echo.say", public)]
pub async fn say(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text })
}

/// Answers the id of the node that ran the request: where a player's requests land.
#[mortar::handler("echo.node", public)]
pub async fn node(ctx: Ctx, _req: NodeReq) -> Result<NodeResp, Code> {
    Ok(NodeResp { node: ctx.node_id().to_owned() })
}

/// Answers the id of the node that holds room `room`: requests for one room reach one worker
/// among those serving echo, whoever sends them (`key = room`).
#[mortar::handler("echo.room", public, key = room)]
pub async fn room(ctx: Ctx, _req: RoomReq) -> Result<NodeResp, Code> {
    Ok(NodeResp { node: ctx.node_id().to_owned() })
}

/// Internal: answers the text in upper case. Only other modules reach it, through `ctx.call`.
#[mortar::handler("echo.upper", internal)]
pub async fn upper(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text.to_uppercase() })
}

/// Internal: answers what this call sees of its caller (session, user, trace, time left), wherever
/// it runs.
#[mortar::handler("echo.context", internal)]
pub async fn context(ctx: Ctx, _req: ContextReq) -> Result<ContextResp, Code> {
    Ok(ContextResp {
        node: ctx.node_id().to_owned(),
        user: ctx.user_id().unwrap_or(0),
        session: ctx.session_id(),
        gateway: ctx.request().session.gateway.clone(),
        remaining_ms: u64::try_from(ctx.remaining().as_millis()).unwrap_or(u64::MAX),
        trace_id: format!("{:032x}", ctx.request().trace_id),
    })
}
