//! The gateway: accepts WebSocket clients and relays their requests to workers.
//!
//! Layout:
//! - this file: [`Gateway`] and [`serve`], the accept loop with its shutdown.
//! - [`admission`]: connection limits (total, per IP, in handshake).
//! - `agent`: one task per connection: reads requests, relays them, writes replies and pushes.
//! - `running`: the requests a session has started, whose replies leave in request order.
//! - `socket`: a connection's WebSocket with its bounded outgoing queue.
//! - `websocket`: the WebSocket protocol's handshake and frames, server side.
//! - [`mailbox`]: a session's pushes waiting for its agent (allocated on the first push), and its kick.
//! - [`envelope`]: the first check of each client frame, and the `UserMessage` as the gateway
//!   holds it (its route a slice of the frame).
//! - [`sessions`]: the live sessions, through which pushes reach clients.
//! - [`directory`]: the players logged in here, when the gateways are the cluster's session
//!   directory (`session.url = "memory"`).
//! - [`relay`]: the way to a worker (in-process, or its tarpc service), with deadlines.
//! - [`service`]: the gateway's own tarpc service, which workers call to push and kick.
//! - [`resync`]: restores this gateway's logins in a session store that lost them.

pub mod admission;
mod agent;
pub mod config;
pub mod directory;
pub mod envelope;
pub mod mailbox;
pub mod relay;
pub mod resync;
mod running;
pub mod service;
pub mod sessions;
mod socket;
mod websocket;

use crate::config::GatewayConfig;
use admission::{Admission, Refusal};
use bytes::Bytes;
use bytestring::ByteString;
use directory::Directory;
use mortar_abi::Code;
use mortar_cluster::rpc::{Claim, Login, Logins, LoginsAnswer, PushReport, UsersPushed};
use mortar_telemetry::metrics as m;
use relay::Relay;
use sessions::SessionTable;
use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use websocket::handshake::Failure;

/// A [`Gateway`] that may be gone (see [`Gateway::downgrade`]).
#[derive(Clone)]
pub struct WeakGateway(std::sync::Weak<Shared>);

impl WeakGateway {
    /// The gateway, while it lives.
    pub fn upgrade(&self) -> Option<Gateway> {
        self.0.upgrade().map(|shared| Gateway { shared })
    }
}

/// This run's first session id: the start time in milliseconds times 2048. Ids never repeat
/// across runs of a gateway (a run would need over 2,048 sessions a millisecond, on average, to
/// reach the next run's first id), so a login left in the session store by a previous run never
/// points at a session of this one, and the run purges those below its first id at start. They
/// stay below 2^53 until the year 2109: exact in JSON and in the Redis store's Lua.
fn first_session() -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    now_ms.max(1) << 11
}

/// The path clients connect to.
pub const WS_PATH: &str = "/ws";

/// A gateway: its config, its identity, its way to the workers and its live sessions. Cheap to
/// clone: clones share the sessions, so one can push while [`serve`] runs with another.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    config: GatewayConfig,
    /// Also each relayed request's `gateway`: a `ByteString` clones without allocating.
    node_id: ByteString,
    relay: Relay,
    admission: Arc<Admission>,
    next_session: AtomicU64,
    sessions: SessionTable,
    /// This run's first session id (see [`first_session`]).
    first_session: u64,
    /// The players logged in here, when the gateways are the session directory; else the
    /// workers keep them in the session store, and a session's end is reported to them.
    directory: Option<Arc<Directory>>,
    /// `GATEWAY_REPLIES` by protocol code, registered once (a labelled lookup per reply costs).
    replies: Vec<metrics::Counter>,
    /// Work a session leaves behind (its unbind, the modules' presence hooks): [`serve`] waits
    /// for it before it returns, so a stopping node finishes its players' offline hooks.
    background: TaskTracker,
}

impl Shared {
    /// Removes user `user`'s login if it is still session `session` of this gateway (in this
    /// gateway's directory, or through the workers, the session store's writer), and then has
    /// the modules' `on_offline` hooks run, in the background (a session's end does not wait on
    /// the store). A session replaced by a newer login of its user runs no hook: the player is
    /// still online.
    fn unbind(&self, user: u64, session: u64, client_ip: std::net::IpAddr) {
        let (directory, node, relay) =
            (self.directory.clone(), String::from(&*self.node_id), self.relay.clone());
        self.background.spawn(async move {
            let ended = match directory {
                Some(directory) => Ok(directory.release(user, session)),
                None => match relay.logins(Logins::Ended { user, gateway: node.clone(), session }).await {
                    Ok(LoginsAnswer::Ended(ended)) => Ok(ended),
                    Ok(answer) => {
                        tracing::warn!(%node, session, user, ?answer, "a worker answered a session's end with something else");
                        Err(Code::INTERNAL)
                    }
                    Err(code) => Err(code),
                },
            };
            match ended {
                Ok(true) => {
                    tracing::debug!(%node, session, user, "user went offline");
                    let status = mortar_cluster::rpc::Status::Offline;
                    relay
                        .presence(mortar_cluster::rpc::Presence {
                            status,
                            user,
                            session,
                            client_ip,
                            gateway: node,
                        })
                        .await;
                }
                Ok(false) => tracing::debug!(%node, session, user, "session was replaced by a newer login"),
                Err(code) => tracing::warn!(%node, session, user, ?code, "cannot unbind the user"),
            }
        });
    }

    /// Counts one reply sent to a client.
    fn count_reply(&self, code: i32) {
        match usize::try_from(code).ok().and_then(|code| self.replies.get(code)) {
            Some(counter) => counter.increment(1),
            None => metrics::counter!(m::GATEWAY_REPLIES, "code" => m::code_label(code)).increment(1),
        }
    }
}

impl Gateway {
    /// A gateway named `node_id` relaying client requests through `relay`; the workers behind it
    /// keep its sessions' logins in the session store.
    pub fn new(config: GatewayConfig, node_id: String, relay: Relay) -> Self {
        Self::build(config, node_id, relay, None)
    }

    /// A gateway named `node_id` relaying client requests through `relay`, that keeps its own
    /// logged-in players: one part of a cluster whose gateways are the session directory
    /// ([`directory`]); workers bind, push and kick through [`Gateway::claim`],
    /// [`Gateway::evict`], [`Gateway::push_users`] and [`Gateway::kick_user`].
    pub fn with_directory(config: GatewayConfig, node_id: String, relay: Relay) -> Self {
        let directory = Arc::new(Directory::new(node_id.clone()));
        Self::build(config, node_id, relay, Some(directory))
    }

    fn build(
        config: GatewayConfig,
        node_id: String,
        relay: Relay,
        directory: Option<Arc<Directory>>,
    ) -> Self {
        let admission =
            Admission::new(config.max_connections, config.max_connections_per_ip, config.max_handshakes);
        let replies = (0..=Code::SERVER_SHUTDOWN.get())
            .map(|code| metrics::counter!(m::GATEWAY_REPLIES, "code" => m::code_label(code)))
            .collect();
        let first_session = first_session();
        let next_session = AtomicU64::new(first_session);
        let sessions = SessionTable::default();
        let shared = Shared {
            config,
            node_id: node_id.into(),
            relay,
            admission,
            next_session,
            sessions,
            first_session,
            directory,
            replies,
            background: TaskTracker::new(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Pushes the message `main.sub` with body `data` to each of `sessions` (ids of this
    /// gateway's sessions), as a server push (`seq` 0).
    ///
    /// The message is encoded once and never waits on a client: a session whose outgoing queue is
    /// full (its client does not read) misses this push, which is counted in
    /// `mortar_gateway_pushes_dropped_total`.
    pub fn push(&self, sessions: &[u64], main: &str, sub: &str, data: Bytes) -> PushReport {
        let frame = envelope::push(main, sub, &data);
        let report = self.shared.sessions.push(sessions, &frame);
        let route = format!("{main}.{sub}");
        metrics::counter!(m::PUSHES, "route" => route.clone()).increment(report.delivered as u64);
        if report.dropped > 0 {
            metrics::counter!(m::PUSHES_DROPPED, "route" => route).increment(report.dropped as u64);
            tracing::debug!(node = %self.shared.node_id, main, sub, dropped = report.dropped, "push dropped for clients that do not read");
        }
        report
    }

    /// Has each of `wills.sessions` hold its push (or drop it) for the loss of its worker (see
    /// [`Wills`](mortar_cluster::rpc::Wills)); how many of them are live.
    pub fn wills(&self, wills: mortar_cluster::rpc::Wills) -> usize {
        let frame = wills.push.map(|(main, sub, data)| envelope::push(&main, &sub, &data));
        let sessions = &self.shared.sessions;
        wills
            .sessions
            .iter()
            .filter(|&&session| sessions.will(session, &wills.worker, &wills.key, frame.as_ref()))
            .count()
    }

    /// This gateway lost its connection to `worker` (it died, froze or drains): the sessions
    /// holding wills for it get them.
    pub fn worker_lost(&self, worker: &str) {
        let sent = self.shared.sessions.worker_lost(worker);
        if sent > 0 {
            tracing::info!(node = %self.shared.node_id, worker, sent, "worker lost: its wills sent to their sessions");
        }
    }

    /// Kicks session `session`: it answers the requests it has read, gets `sys.kick` with
    /// `reason` and is closed. False when no such session is connected.
    pub fn kick(&self, session: u64, reason: Code) -> bool {
        self.shared.sessions.kick(session, reason.get())
    }

    /// Marks session `session` as logged in as `user`: its requests carry the user from now on,
    /// and the modules' `on_online` hooks run, in the background. False when no such session is
    /// connected. The session store is the caller's to update.
    pub fn bind(&self, session: u64, user: u64) -> bool {
        let Some(client_ip) = (user != 0).then(|| self.shared.sessions.bind(session, user)).flatten() else {
            return false;
        };
        let (relay, gateway) = (self.shared.relay.clone(), String::from(&*self.shared.node_id));
        let presence = mortar_cluster::rpc::Presence {
            status: mortar_cluster::rpc::Status::Online,
            user,
            session,
            client_ip,
            gateway,
        };
        self.shared.background.spawn(async move { relay.presence(presence).await });
        true
    }

    /// Logs session `session` in as `user` (a login at `at_ms`, by the worker's clock) in this
    /// gateway's directory: kicks this gateway's older session of the user with
    /// `LOGGED_IN_ELSEWHERE`, marks the session (see [`Gateway::bind`]). `Superseded` when a newer
    /// login of the user is known here; `Gone` when the session ended, or this gateway is not a
    /// directory.
    pub fn claim(&self, session: u64, user: u64, at_ms: u64) -> Claim {
        let Some(directory) = &self.shared.directory else { return Claim::Gone };
        let login = Login { at_ms, gateway: String::from(&*self.shared.node_id), session };
        match directory.claim(user, login) {
            Err(()) => return Claim::Superseded,
            Ok(Some(replaced)) => {
                tracing::info!(node = %self.shared.node_id, user, old_session = replaced, "logged in again here: old session kicked");
                self.kick(replaced, Code::LOGGED_IN_ELSEWHERE);
            }
            Ok(None) => {}
        }
        if self.bind(session, user) {
            Claim::Bound
        } else {
            // Ended before it was marked: its agent will not unbind it.
            directory.release(user, session);
            Claim::Gone
        }
    }

    /// Takes in that `user` logged in with `login` on another gateway: kicks their older session
    /// here with `LOGGED_IN_ELSEWHERE`. True when it kicked one.
    pub fn evict(&self, user: u64, login: Login) -> bool {
        let Some(directory) = &self.shared.directory else { return false };
        match directory.evict(user, login) {
            Some(session) => {
                tracing::info!(node = %self.shared.node_id, user, old_session = session, "logged in elsewhere: old session kicked");
                self.kick(session, Code::LOGGED_IN_ELSEWHERE)
            }
            None => false,
        }
    }

    /// Pushes `main.sub` with body `data` to those of `users` logged in here (see
    /// [`Gateway::push`]); says which were found.
    pub fn push_users(&self, users: &[u64], main: &str, sub: &str, data: Bytes) -> UsersPushed {
        let Some(directory) = &self.shared.directory else { return UsersPushed::default() };
        let (found, sessions): (Vec<u64>, Vec<u64>) = users
            .iter()
            .zip(directory.sessions_of(users))
            .filter_map(|(user, session)| Some((*user, session?)))
            .unzip();
        let report =
            if sessions.is_empty() { PushReport::default() } else { self.push(&sessions, main, sub, data) };
        UsersPushed { report, found }
    }

    /// Kicks `user`'s session here with `reason`; false when they are not logged in here.
    pub fn kick_user(&self, user: u64, reason: Code) -> bool {
        let Some(directory) = &self.shared.directory else { return false };
        match directory.sessions_of(&[user]).pop().flatten() {
            Some(session) => self.kick(session, reason),
            None => false,
        }
    }

    /// Where each of `users` is logged in here, in their order.
    pub fn locate(&self, users: &[u64]) -> Vec<Option<mortar_backends::session::Location>> {
        match &self.shared.directory {
            Some(directory) => directory.locate(users),
            None => Vec::new(),
        }
    }

    /// This gateway's node id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// A handle that does not keep the gateway alive: for the node's own worker, which the
    /// gateway's relay holds (a strong handle both ways would be a cycle that never ends).
    pub fn downgrade(&self) -> WeakGateway {
        WeakGateway(Arc::downgrade(&self.shared))
    }

    /// Sessions connected to this gateway now.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }
}

/// Accepts clients on `listener` and serves them until `shutdown` completes.
///
/// Stops when `shutdown` completes: it stops accepting, tells every session to finish its
/// in-flight requests, push `sys.kick` (`SERVER_SHUTDOWN`) and close, and returns once all
/// sessions have ended, or once the configured grace period has passed (the sessions still open
/// then are aborted, so nothing of the gateway outlives this call).
pub async fn serve(listener: TcpListener, gateway: Gateway, shutdown: impl Future<Output = ()>) {
    let shared = gateway.shared;
    let stop = CancellationToken::new();
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished sessions so the set holds only live ones.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.spawn(connection(shared.clone(), stream, peer, stop.clone()));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    // Sessions registered from now on see the token cancelled; those before get the kick.
    stop.cancel();
    shared.sessions.shutdown();
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_grace();
    let all_ended = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all_ended).await.is_err() {
        tracing::warn!(
            remaining = sessions.len(),
            "sessions still open after the shutdown grace period: aborting them"
        );
        sessions.shutdown().await;
    }
    // The ended sessions' offline hooks: run them to the end (within the grace), so a node that
    // stops neither cuts them nor still writes to its store after it returned.
    shared.background.close();
    if tokio::time::timeout_at(deadline, shared.background.wait()).await.is_err() {
        tracing::warn!(
            remaining = shared.background.len(),
            "presence hooks still running after the shutdown grace period: leaving them"
        );
    }
}

/// Upgrades one TCP connection to a WebSocket (within the handshake timeout) and runs its agent.
///
/// A connection over the handshake limit is closed at once; one over the total or per-IP limit is
/// answered HTTP 503 or 429 at the upgrade.
async fn connection(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
    let config = &shared.config;
    let handshake_slot = match shared.admission.handshake() {
        Ok(slot) => slot,
        Err(refusal) => return refused(refusal, peer),
    };
    let admitted = shared.admission.connect(peer.ip());
    let refusal = admitted.as_ref().err().copied();
    let _ = stream.set_nodelay(true);
    // Boxed: the handshake's state is needed only until the upgrade, not for the connection's
    // whole life (the task keeps the size of its largest state).
    let handshake = Box::pin(websocket::handshake::accept(&mut stream, refusal));
    let upgraded = tokio::select! {
        () = stop.cancelled() => return,
        upgraded = tokio::time::timeout(config.handshake_timeout(), handshake) => upgraded,
    };
    drop(handshake_slot);
    let (read, _connection_slot) = match (upgraded, admitted) {
        (Ok(Ok(read)), Ok(slot)) => (read, slot),
        // Refused by a limit: answered 429/503.
        (Ok(Err(Failure::Refused(refusal))), _) => return refused(refusal, peer),
        (Ok(Ok(_)), Err(refusal)) => return refused(refusal, peer),
        (Ok(Err(error)), _) => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake_failed").increment(1);
            tracing::debug!(%peer, %error, "websocket handshake failed");
            return;
        }
        (Err(_), _) => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "handshake_timeout").increment(1);
            tracing::debug!(%peer, "websocket handshake timed out");
            return;
        }
    };
    let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::CONNECTIONS_ACCEPTED).increment(1);
    metrics::gauge!(m::CONNECTIONS).increment(1.0);
    agent::run(shared.clone(), stream, read, session, peer.ip(), stop).await;
    metrics::gauge!(m::CONNECTIONS).decrement(1.0);
}

fn refused(refusal: Refusal, peer: SocketAddr) {
    metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => refusal.as_str()).increment(1);
    tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
}
