//! The echo demo module: `echo.say` answers the text it is sent. It is how small a module is.

use mortar::pb::echo::{EchoReq, EchoResp};
use mortar::prelude::*;

mortar::module!("echo");

/// Answers the request's text.
#[mortar::handler("echo.say")]
pub async fn say(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text })
}
