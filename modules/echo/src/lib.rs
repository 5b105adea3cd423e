//! The echo demo module: `echo.say` answers the text it is sent; `echo.node` says which worker
//! node ran the request. It is how small a module is.

use mortar::pb::echo::{EchoReq, EchoResp, NodeReq, NodeResp};
use mortar::prelude::*;

mortar::module!("echo");

/// Answers the request's text.
#[mortar::handler("echo.say")]
pub async fn say(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text })
}

/// Answers the id of the node that ran the request: where a player's requests land.
#[mortar::handler("echo.node")]
pub async fn node(ctx: Ctx, _req: NodeReq) -> Result<NodeResp, Code> {
    Ok(NodeResp { node: ctx.node_id().to_owned() })
}
