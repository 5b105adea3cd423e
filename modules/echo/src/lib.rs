//! The echo demo module: `echo.say` answers the text it is sent; `echo.node` says which worker
//! node ran the request; the internal `echo.upper` is there for other modules to call. It is how
//! small a module is: this file, `proto/echo.proto` and a one-line `build.rs`.

use mortar::prelude::*;

/// The messages of `proto/echo.proto`.
pub mod echo {
    mortar::include_proto!("echo");
}

use echo::{EchoReq, EchoResp, NodeReq, NodeResp};

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

/// Internal: answers the text in upper case. Only other modules reach it, through `ctx.call`.
#[mortar::handler("echo.upper", internal)]
pub async fn upper(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text.to_uppercase() })
}
