//! The gateway's way to a worker: one tarpc client, a deadline on every call, RPC failures turned
//! into codes, and the call's latency recorded by peer.

use crate::{
    metrics as m,
    rpc::{AgentMessage, Reply, WorkerRpcClient},
    trace,
};
use mortar::Code;
use std::time::{Duration, Instant};
use tarpc::client::RpcError;

/// Relays client requests to a worker.
#[derive(Clone)]
pub struct Relay {
    worker: WorkerRpcClient,
    peer: String,
    timeout: Duration,
    latency: metrics::Histogram,
}

impl Relay {
    /// Relays over `worker` (the node `peer`), giving each call `timeout` to complete.
    pub fn new(worker: WorkerRpcClient, peer: String, timeout: Duration) -> Self {
        let latency = metrics::histogram!(m::RPC_DURATION, "peer" => peer.clone());
        Self { worker, peer, timeout, latency }
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
        let started = Instant::now();
        let mut cx = tarpc::context::current();
        cx.deadline = started + self.timeout;
        cx.trace_context.trace_id = msg.trace_id.into();
        let (session, seq, trace_id) = (msg.session, msg.seq, msg.trace_id);
        let result = self.worker.handle(cx, msg).await;
        self.latency.record(started.elapsed());
        match result {
            Ok(reply) => {
                tracing::debug!(peer = %self.peer, session, seq, trace = %trace::display(trace_id), code = %m::code_label(reply.code), "relayed");
                reply
            }
            Err(error) => {
                let code = code_of(&error);
                metrics::counter!(m::RPC_ERRORS, "peer" => self.peer.clone(), "code" => m::code_label(code.get()))
                    .increment(1);
                tracing::warn!(peer = %self.peer, session, seq, trace = %trace::display(trace_id), %error, ?code, "relay to worker failed");
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
