//! The gateway's way to a worker: one tarpc client, a deadline on every call, and RPC failures
//! turned into codes.

use crate::rpc::{AgentMessage, Reply, WorkerRpcClient};
use mortar::Code;
use std::time::{Duration, Instant};
use tarpc::client::RpcError;

/// Relays client requests to a worker.
#[derive(Clone)]
pub struct Relay {
    worker: WorkerRpcClient,
    timeout: Duration,
}

impl Relay {
    /// Relays over `worker`, giving each call `timeout` to complete.
    pub fn new(worker: WorkerRpcClient, timeout: Duration) -> Self {
        Self { worker, timeout }
    }

    /// Relays `msg` to the worker.
    ///
    /// Completes when the worker replies or the deadline passes, whichever comes first, so the
    /// client always receives exactly one reply.
    ///
    /// # Errors
    /// None: failures are replies with `TIMEOUT` (deadline passed), `UNAVAILABLE` (the worker is
    /// gone) or `INTERNAL`.
    pub async fn relay(&self, msg: AgentMessage) -> Reply {
        let mut cx = tarpc::context::current();
        cx.deadline = Instant::now() + self.timeout;
        let session = msg.session;
        match self.worker.handle(cx, msg).await {
            Ok(reply) => reply,
            Err(error) => {
                let code = code_of(&error);
                tracing::warn!(session, %error, ?code, "relay to worker failed");
                Reply::code(code)
            }
        }
    }
}

fn code_of(error: &RpcError) -> Code {
    match error {
        RpcError::DeadlineExceeded => Code::TIMEOUT,
        RpcError::Server(server) if server.kind == std::io::ErrorKind::TimedOut => Code::TIMEOUT,
        RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_) => Code::UNAVAILABLE,
        RpcError::Server(_) => Code::INTERNAL,
    }
}
