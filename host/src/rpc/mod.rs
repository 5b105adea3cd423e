//! What nodes say to each other over tarpc: the worker service and its messages.
//!
//! The same service runs over tarpc's in-process channel transport (`mortar dev`) and over TCP
//! (the cluster), so the gateway's code path is the same in both.

use bytes::Bytes;
use mortar::Code;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A client request relayed by a gateway to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentMessage {
    /// Module part of the route.
    pub main: String,
    /// Handler part of the route.
    pub sub: String,
    /// The client's request id.
    pub seq: u32,
    /// The request body, as the client sent it.
    pub data: Bytes,
    /// The session id on its gateway.
    pub session: u64,
    /// The logged-in user, if any.
    pub user: Option<u64>,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The id of the gateway holding the session.
    pub gateway: String,
    /// The request's trace id (see `trace`), shared by its log lines in every process.
    pub trace_id: u128,
}

/// A worker's answer to one request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// The reply's code (see `ErrorCode`; module codes from 1000).
    pub code: i32,
    /// The encoded reply body; empty unless `code` is OK.
    pub data: Bytes,
}

impl Reply {
    /// A reply carrying only a code.
    pub fn code(code: Code) -> Self {
        Self { code: code.get(), data: Bytes::new() }
    }
}

impl From<Result<Bytes, Code>> for Reply {
    fn from(result: Result<Bytes, Code>) -> Self {
        match result {
            Ok(data) => Self { code: Code::OK.get(), data },
            Err(code) => Self::code(code),
        }
    }
}

/// The service every worker node serves.
#[tarpc::service]
pub trait WorkerRpc {
    /// Handles one client request relayed by a gateway. Always answers: failures are codes.
    async fn handle(msg: AgentMessage) -> Reply;
}
