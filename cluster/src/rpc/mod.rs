//! What nodes say to each other over tarpc: the worker and gateway services and their messages.
//!
//! The same services run over tarpc's in-process channel transport (`mortar dev`) and over TCP
//! (the cluster), so the gateway's code path is the same in both.
//!
//! Layout:
//! - this file: the services ([`WorkerRpc`], [`GatewayRpc`]) and their messages.
//! - [`codec`]: the postcard serde format over length-delimited frames.
//! - [`handshake`]: the first exchange on every connection (cluster secret, who is who).
//! - [`listener`]: accepting peer connections with a cap, the handshake, then a service.
//! - [`stream`]: client requests pipelined on a worker connection, beside tarpc's messages.
//! - [`workers`]: a node's connections to the workers, and the choice of one for each request.
//! - [`rendezvous`]: weighted rendezvous hashing, so a player sticks to one worker.

pub mod codec;
pub mod handshake;
pub mod listener;
pub mod rendezvous;
pub mod stream;
pub mod workers;

use bytes::Bytes;
use bytestring::ByteString;
use mortar_abi::{Code, Failure};
use mortar_backends::session::Location;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A client request relayed by a gateway to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentMessage {
    /// Module part of the route (a view of the client's frame on the gateway: no copy).
    pub main: ByteString,
    /// Handler part of the route.
    pub sub: ByteString,
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
    pub gateway: ByteString,
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
    /// Why the request failed, for the client's `UserMessage.reason` (the gateway cuts it to
    /// `envelope::MAX_REASON_BYTES`); empty when there is none, and ignored when `code` is OK.
    pub reason: String,
}

impl Reply {
    /// A reply carrying only a code.
    pub fn code(code: Code) -> Self {
        Self { code: code.get(), data: Bytes::new(), reason: String::new() }
    }

    /// A reply carrying a code and the reason the client reads.
    pub fn because(code: Code, reason: impl Into<String>) -> Self {
        Self { code: code.get(), data: Bytes::new(), reason: reason.into() }
    }

    /// An OK reply with the encoded body `data`.
    pub fn ok(data: Bytes) -> Self {
        Self { code: Code::OK.get(), data, reason: String::new() }
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Self {
        match failure.into_parts() {
            (code, Some(reason)) => Self::because(code, reason),
            (code, None) => Self::code(code),
        }
    }
}

impl From<Result<Bytes, Failure>> for Reply {
    fn from(result: Result<Bytes, Failure>) -> Self {
        match result {
            Ok(data) => Self::ok(data),
            Err(failure) => failure.into(),
        }
    }
}

/// What a worker did with a relayed request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Handled {
    /// It ran the request; this is the reply.
    Reply(Reply),
    /// It is shutting down and did not run the request, which it hands back: the gateway may
    /// send it to another worker (and stops sending this one more).
    Draining(Box<AgentMessage>),
}

/// A module's call to a route of a module another worker serves (`Ctx::call`). Its deadline is
/// the caller's, carried by the tarpc context.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InternalCall {
    /// Module part of the route.
    pub main: String,
    /// Handler part of the route.
    pub sub: String,
    /// The encoded request.
    pub data: Bytes,
    /// The caller's session (the client request the call is made for).
    pub session: u64,
    /// The caller's logged-in user, if any.
    pub user: Option<u64>,
    /// The caller's client IP address.
    pub client_ip: IpAddr,
    /// The gateway holding the caller's session.
    pub gateway: String,
    /// The caller's trace id.
    pub trace_id: u128,
    /// How many calls deep the callee runs (the caller's depth plus one).
    pub depth: u8,
}

/// What a worker did with an internal call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Called {
    /// It ran the call; this is the reply.
    Reply(Reply),
    /// It is shutting down and did not run the call, which it hands back for another worker.
    Draining(Box<InternalCall>),
}

/// Whether a player came online or went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// A session was bound to the player (a login).
    Online,
    /// The player's session ended while it was still their login.
    Offline,
}

/// A player came online or went offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Presence {
    /// Which.
    pub status: Status,
    /// The player.
    pub user: u64,
    /// The session that logged in or ended.
    pub session: u64,
    /// Its client IP address.
    pub client_ip: IpAddr,
    /// The gateway that held it.
    pub gateway: String,
}

/// A change to the cluster's logins that a gateway asks of the runtime, the session store's one
/// writer (`mortar_runtime::players`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Logins {
    /// Session `session` of gateway `gateway` ended: its user's login is removed if it is still
    /// this session's. Answers [`LoginsAnswer::Ended`].
    Ended {
        /// Its user.
        user: u64,
        /// The gateway that held it.
        gateway: String,
        /// The session.
        session: u64,
    },
    /// The store lost its logins: `location` goes back as `user`'s unless the user has another
    /// one. Answers [`LoginsAnswer::Restored`].
    Restore {
        /// The player.
        user: u64,
        /// Their session, on the asking gateway.
        location: Location,
    },
    /// Gateway `gateway` started again: the logins a previous run left on it (sessions below
    /// `below`, this run's first session id) are removed. Answers [`LoginsAnswer::Purged`].
    Purge {
        /// The gateway.
        gateway: String,
        /// This run's first session id.
        below: u64,
    },
    /// Asks the store's generation, which changes when it loses its logins. Answers
    /// [`LoginsAnswer::Generation`].
    Generation,
}

/// The answer to a [`Logins`] change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginsAnswer {
    /// Whether the ended session was its user's login (the player went offline).
    Ended(bool),
    /// None: restored (or it was there); else the other login the user has.
    Restored(Option<Location>),
    /// How many logins were removed.
    Purged(usize),
    /// The store's generation.
    Generation(String),
}

/// One payload for many sessions of one gateway: a server push.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushBatch {
    /// The gateway's session ids.
    pub sessions: Vec<u64>,
    /// Module part of the push route (`mail`).
    pub main: String,
    /// Handler part of the push route (`new`).
    pub sub: String,
    /// The encoded push body.
    pub data: Bytes,
}

/// The service every worker node serves.
#[tarpc::service]
pub trait WorkerRpc {
    /// Handles one client request relayed by a gateway. Always answers: failures are codes.
    async fn handle(msg: AgentMessage) -> Handled;
    /// Runs a route (internal or not) for a module of another worker. Always answers: failures
    /// are codes (`NO_ROUTE` for a route this worker does not serve).
    async fn call(call: InternalCall) -> Called;
    /// Runs the `on_online` or `on_offline` hooks of `modules` (those of them this worker
    /// serves) for the player who came online or went offline; completes when they have run.
    async fn presence(presence: Presence, modules: Vec<String>);
    /// Changes the cluster's logins in the session store for a gateway: a session ended, a login
    /// restored, a restarted gateway's old logins purged. `Err` carries a code (`UNAVAILABLE`
    /// when the store cannot be reached).
    async fn logins(change: Logins) -> Result<LoginsAnswer, i32>;
    /// Answers at once: the gateway's liveness check.
    async fn ping();
    /// The protos of the routes this worker serves: an encoded `FileDescriptorSet`.
    async fn descriptors() -> bytes::Bytes;
}

/// The service every cluster gateway serves to workers.
#[tarpc::service]
pub trait GatewayRpc {
    /// Pushes one payload to each of the batch's sessions (`seq` 0), without waiting on any
    /// client; says what became of it.
    async fn push(batch: PushBatch) -> PushReport;
    /// Kicks session `session`: it gets `sys.kick` with `reason`, then is closed. False when no
    /// such session is connected.
    async fn kick(session: u64, reason: i32) -> bool;
    /// Marks session `session` as logged in as `user`. False when no such session is connected.
    async fn bind(session: u64, user: u64) -> bool;
    /// Session directory (`session.url = "memory"`): logs session `session` in as `user`, a login
    /// at `at_ms`; kicks the gateway's older session of the user.
    async fn claim(session: u64, user: u64, at_ms: u64) -> Claim;
    /// Session directory: `user` logged in with `login` on another gateway; kicks their older
    /// session here. True when it kicked one.
    async fn evict(user: u64, login: Login) -> bool;
    /// Session directory: pushes one payload to those of `users` logged in here.
    async fn push_users(users: Vec<u64>, main: String, sub: String, data: Bytes) -> UsersPushed;
    /// Session directory: kicks `user`'s session here with `reason`. False when there is none.
    async fn kick_user(user: u64, reason: i32) -> bool;
    /// Session directory: where each of `users` is logged in here.
    async fn locate(users: Vec<u64>) -> Vec<Option<Location>>;
    /// Holds (or, without a push, drops) the wills of `wills.sessions` under the key of worker
    /// `wills.worker`; says how many of the sessions are live here.
    async fn wills(wills: Wills) -> usize;
    /// Answers at once: a liveness check.
    async fn ping();
}

/// Pushes a gateway holds for some of its sessions on behalf of a worker and sends them when it
/// loses that worker's connection (it died): how a room's members learn that its worker is gone
/// (`mortar::room`). One will per session, worker and key; a new one replaces the old.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wills {
    /// The worker whose loss sends them.
    pub worker: String,
    /// What they are about (a room's id).
    pub key: String,
    /// The gateway's sessions.
    pub sessions: Vec<u64>,
    /// The push as `(main, sub, data)`; none drops the wills.
    pub push: Option<(String, String, Bytes)>,
}

/// One login: when it happened (by the worker's clock), on which gateway and session. Ordered by
/// those fields in turn; the later login of a player wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Login {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The gateway holding the session.
    pub gateway: String,
    /// The session.
    pub session: u64,
}

/// What became of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// The session is logged in as the player.
    Bound,
    /// A newer login of the player exists: this one lost.
    Superseded,
    /// The session ended before it could be marked.
    Gone,
}

/// A push to players by user id, as one gateway carried it out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersPushed {
    /// What became of it, by session.
    pub report: PushReport,
    /// The users among those asked who are logged in here.
    pub found: Vec<u64>,
}

/// What became of one push, by session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReport {
    /// Queued for the session's client.
    pub delivered: usize,
    /// No such session on this gateway (it ended, or never was).
    pub offline: usize,
    /// Which: the ids of the sessions counted in `offline`.
    pub gone: Vec<u64>,
    /// The session's outgoing queue was full (its client does not read) or closing: not sent.
    pub dropped: usize,
}
