//! The session store: where each logged-in player is (user id → gateway, session, login time),
//! for pushes to players wherever they are and for kicking a session replaced by a newer login.
//!
//! Layout:
//! - this file: [`Location`], [`SessionStore`] and [`open`] (the backend `session.url` names).
//! - [`memory`]: in this process (`mortar dev`, the default).
//! - [`redis`]: a Redis server (`session.url = "redis://…"`), shared by every node of a cluster.
//! - [`conformance`]: the suite every backend passes (doc-hidden; the tests run it).
//!
//! Guarantees of every backend:
//! 1. [`SessionStore::bind`] replaces a user's location atomically and returns the one it
//!    replaced: of many logins of one user racing, each sees a distinct predecessor, and exactly
//!    one location is left.
//! 2. [`SessionStore::unbind`] removes a location only while it is still the user's, so a late
//!    disconnect of a replaced session never unbinds its successor.
//! 3. [`SessionStore::purge_gateway`] removes every location on a gateway that died (or the
//!    sessions of its previous run, when it started again), so its players can log in again at
//!    once and nobody shows online through a session that is gone.
//! 4. [`SessionStore::restore`] puts a location back only where the user has none: it never
//!    overwrites a login made meanwhile. A store that can lose its contents while the nodes run
//!    (a Redis server restarted empty) says so by a new [`SessionStore::generation`]; the gateways
//!    then restore the logins of the sessions they hold (`gateway::resync`).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
pub mod redis;

use crate::config::SessionConfig;
use mortar_abi::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where a logged-in player is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The id of the gateway node holding the session.
    pub gateway: String,
    /// The session id, unique within its gateway.
    pub session: u64,
    /// When the player logged in, in milliseconds since the Unix epoch.
    pub login_at_ms: u64,
}

impl Location {
    /// Whether this is the session `session` of gateway `gateway`.
    pub fn is(&self, gateway: &str, session: u64) -> bool {
        self.gateway == gateway && self.session == session
    }
}

/// Why the session store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The backend cannot be reached or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend holds something that is not a location.
    #[error("session store holds a bad entry: {0}")]
    Corrupt(String),
}

/// Users' locations. See the module docs for the guarantees.
pub trait SessionStore: Send + Sync + 'static {
    /// Makes `location` user `user`'s, replacing atomically the location it had, which it
    /// returns.
    fn bind(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>>;

    /// Removes user `user`'s location if it is still session `session` of gateway `gateway`.
    /// True when it removed it.
    fn unbind(&self, user: u64, gateway: String, session: u64) -> BoxFuture<Result<bool, SessionError>>;

    /// The locations of `users`, in their order (none: offline).
    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, SessionError>>;

    /// Removes every location on gateway `gateway` whose session id is below `below` (all of
    /// them: `u64::MAX`); how many it removed. A gateway that starts again purges those of its
    /// previous run this way, without touching the logins of its new sessions.
    fn purge_gateway(&self, gateway: String, below: u64) -> BoxFuture<Result<usize, SessionError>>;

    /// Makes `location` user `user`'s only if the user has no location, atomically: `None` when
    /// it did (or the user already had this very location), else the location the user has,
    /// which it left in place. For re-registering logins the store lost.
    fn restore(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>>;

    /// A token that changes whenever the store lost its contents (a Redis server restarted
    /// without its data, or flushed), so that the gateways restore their sessions' logins. The
    /// default: a store that loses nothing while the process lives.
    fn generation(&self) -> BoxFuture<Result<String, SessionError>> {
        Box::pin(std::future::ready(Ok(String::new())))
    }
}

/// Where a cluster node keeps players' sessions, as it says in its handshake (peers must say the
/// same): for `session.url = "memory"` a text saying each gateway keeps its own players (workers
/// ask the gateways: `mortar_runtime::directory`), else the store's URL without user
/// and password.
pub fn identity(config: &SessionConfig) -> String {
    match config.url.as_str() {
        "memory" => "\"memory\" (each gateway keeps its own players)".into(),
        url => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
            format!("{scheme}://{rest}")
        }
    }
}

/// Opens the store `session.url` names, for the cluster named `cluster` (its keys' prefix).
///
/// # Errors
/// A Redis server that cannot be reached at start.
pub async fn open(session: &SessionConfig, cluster: &str) -> Result<Arc<dyn SessionStore>, SessionError> {
    if session.url == "memory" {
        return Ok(Arc::new(memory::MemorySessions::default()));
    }
    let store = redis::RedisSessions::connect(&session.url, cluster, session.timeout()).await?;
    Ok(Arc::new(store))
}
