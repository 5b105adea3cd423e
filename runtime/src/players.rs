//! Players for module code: login binding, pushes, kicks and presence.
//!
//! The runtime is the session store's one writer: it binds logins here (`Ctx::bind_user`), and
//! removes, restores and purges them when a gateway reports a session's end, a store that lost
//! its logins or its own restart ([`Players::logins`]); a gateway never writes the store itself.
//!
//! [`Players`] is what the worker asks; two ways answer it:
//! - [`StorePlayers`]: a session store (`mortar dev`'s memory, or Redis shared by the cluster)
//!   says where each player is, and the gateway holding the session is called.
//! - [`GatewayDirectory`](super::directory::GatewayDirectory): the gateways themselves are the
//!   directory (`session.url = "memory"` on a cluster), and are asked.

use super::gateways::Gateways;
use bytes::Bytes;
use mortar_abi::{
    Code,
    future::BoxFuture,
    host::{Pushed, Session, SessionsPushed},
};
use mortar_backends::session::{Location, SessionError, SessionStore};
use mortar_cluster::rpc::{Logins, LoginsAnswer, PushBatch, Wills};
use std::{collections::HashMap, sync::Arc, time::SystemTime};

/// Where logged-in players are and how to reach them: what `Ctx::bind_user`, `Ctx::push`,
/// `Ctx::kick`, `Ctx::online` and the admin API use.
pub trait Players: Send + Sync + 'static {
    /// Binds `session` to `user` (see `Ctx::bind_user`): an older session of the user anywhere is
    /// kicked with `LOGGED_IN_ELSEWHERE`.
    fn bind(&self, session: Session, user: u64) -> BoxFuture<Result<(), Code>>;

    /// Pushes `main.sub` with `body` to the online ones of `users`; offline ones are reported.
    fn push(
        &self,
        users: Vec<u64>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>>;

    /// Pushes `main.sub` with `body` to each of `sessions` (gateway, session id there), one batch
    /// per gateway.
    fn push_sessions(
        &self,
        sessions: Vec<(String, u64)>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<SessionsPushed, Code>>;

    /// Has the gateway of each of `sessions` (gateway, session id) hold `wills` (or drop them).
    fn wills(&self, sessions: Vec<(String, u64)>, wills: Wills) -> BoxFuture<Result<(), Code>>;

    /// Kicks `user` wherever they are; false when they are offline.
    fn kick(&self, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>>;

    /// Where each of `users` is logged in, in their order.
    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, Code>>;

    /// Changes the logins as a gateway asks (a session ended, a login restored, a restarted
    /// gateway's old logins purged; see [`Logins`]).
    fn logins(&self, change: Logins) -> BoxFuture<Result<LoginsAnswer, Code>>;
}

/// Milliseconds since the Unix epoch: a login's time.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

fn unavailable(error: SessionError) -> Code {
    tracing::warn!(%error, "session store failed");
    Code::UNAVAILABLE
}

/// Players found through a session store, reached through the gateways holding them.
pub struct StorePlayers {
    /// Where players are.
    pub store: Arc<dyn SessionStore>,
    /// The gateways holding their sessions.
    pub gateways: Arc<dyn Gateways>,
}

impl Players for StorePlayers {
    fn bind(&self, session: Session, user: u64) -> BoxFuture<Result<(), Code>> {
        Box::pin(bind_user(self.store.clone(), self.gateways.clone(), session, user))
    }

    fn push(
        &self,
        users: Vec<u64>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>> {
        Box::pin(push(self.store.clone(), self.gateways.clone(), users, main, sub, body))
    }

    fn push_sessions(
        &self,
        sessions: Vec<(String, u64)>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<SessionsPushed, Code>> {
        Box::pin(push_sessions(self.gateways.clone(), sessions, main, sub, body))
    }

    fn wills(&self, sessions: Vec<(String, u64)>, wills: Wills) -> BoxFuture<Result<(), Code>> {
        Box::pin(send_wills(self.gateways.clone(), sessions, wills))
    }

    fn kick(&self, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        let (store, gateways) = (self.store.clone(), self.gateways.clone());
        Box::pin(async move {
            let found = store.locate(vec![user]).await.map_err(unavailable)?;
            match found.into_iter().next().flatten() {
                Some(location) => gateways.kick(&location.gateway, location.session, reason).await,
                None => Ok(false),
            }
        })
    }

    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, Code>> {
        let store = self.store.clone();
        Box::pin(async move { store.locate(users).await.map_err(unavailable) })
    }

    fn logins(&self, change: Logins) -> BoxFuture<Result<LoginsAnswer, Code>> {
        let (store, gateways) = (self.store.clone(), self.gateways.clone());
        Box::pin(async move {
            let answer = match change {
                Logins::Ended { user, gateway, session } => {
                    LoginsAnswer::Ended(store.unbind(user, gateway, session).await.map_err(unavailable)?)
                }
                Logins::Restore { user, location } => {
                    LoginsAnswer::Restored(restore(&*store, &*gateways, user, location).await?)
                }
                Logins::Purge { gateway, below } => {
                    LoginsAnswer::Purged(store.purge_gateway(gateway, below).await.map_err(unavailable)?)
                }
                Logins::Generation => {
                    LoginsAnswer::Generation(store.generation().await.map_err(unavailable)?)
                }
            };
            Ok(answer)
        })
    }
}

/// Puts `location` back as `user`'s login in a store that lost it: `None` when it is the user's
/// now, else the login the user keeps. A login restored first by another gateway that is older
/// than `location` gives way (its session is kicked `LOGGED_IN_ELSEWHERE`): the store lost the
/// newer one, and whichever gateway restores first must not decide which login of a player stays.
async fn restore(
    store: &dyn SessionStore,
    gateways: &dyn Gateways,
    user: u64,
    location: Location,
) -> Result<Option<Location>, Code> {
    let held = match store.restore(user, location.clone()).await.map_err(unavailable)? {
        Some(held) if held.login_at_ms < location.login_at_ms => held,
        other => return Ok(other),
    };
    let replaced = store.bind(user, location.clone()).await.map_err(unavailable)?;
    match replaced {
        // A login newer than both came meanwhile: it stays, and this session gives way.
        Some(newer) if newer != held && newer.login_at_ms > location.login_at_ms => {
            store.bind(user, newer.clone()).await.map_err(unavailable)?;
            Ok(Some(newer))
        }
        Some(older) if !older.is(&location.gateway, location.session) => {
            tracing::info!(user, old_gateway = %older.gateway, old_session = older.session, "restored a newer login than the one restored first: the older session kicked");
            if let Err(code) = gateways.kick(&older.gateway, older.session, Code::LOGGED_IN_ELSEWHERE).await {
                tracing::warn!(user, old_gateway = %older.gateway, ?code, "cannot kick the replaced session");
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Pushes `main.sub` with `body` to each of `sessions` (gateway, session id) through `gateways`:
/// one batch per gateway, sent at once.
pub(super) async fn push_sessions(
    gateways: Arc<dyn Gateways>,
    sessions: Vec<(String, u64)>,
    main: String,
    sub: String,
    body: Bytes,
) -> Result<SessionsPushed, Code> {
    // Each gateway's sessions, with their indexes among those asked.
    let mut by_gateway: HashMap<String, (Vec<u64>, Vec<usize>)> = HashMap::new();
    for (index, (gateway, session)) in sessions.into_iter().enumerate() {
        let (ids, indexes) = by_gateway.entry(gateway).or_default();
        ids.push(session);
        indexes.push(index);
    }
    let sends = by_gateway.into_iter().map(|(gateway, (ids, indexes))| {
        let batch =
            PushBatch { sessions: ids.clone(), main: main.clone(), sub: sub.clone(), data: body.clone() };
        let gateways = gateways.clone();
        async move { (ids, indexes, gateways.push(&gateway, batch).await) }
    });
    let mut pushed = SessionsPushed::default();
    for (ids, indexes, report) in futures::future::join_all(sends).await {
        match report {
            Ok(report) => {
                pushed.delivered += report.delivered;
                pushed.undelivered += report.dropped;
                let gone = ids.iter().zip(&indexes).filter(|(id, _)| report.gone.contains(id));
                pushed.gone.extend(gone.map(|(_, index)| *index));
            }
            Err(_) => pushed.gone.extend(indexes),
        }
    }
    pushed.gone.sort_unstable();
    Ok(pushed)
}

/// Sends `wills` for `sessions` (gateway, session id) to their gateways, one message each.
///
/// # Errors
/// `UNAVAILABLE` when a gateway could not be reached (the others got theirs).
pub(super) async fn send_wills(
    gateways: Arc<dyn Gateways>,
    sessions: Vec<(String, u64)>,
    wills: Wills,
) -> Result<(), Code> {
    let mut by_gateway: HashMap<String, Vec<u64>> = HashMap::new();
    for (gateway, session) in sessions {
        by_gateway.entry(gateway).or_default().push(session);
    }
    let sends = by_gateway.into_iter().map(|(gateway, sessions)| {
        let (gateways, wills) = (gateways.clone(), Wills { sessions, ..wills.clone() });
        async move { gateways.wills(&gateway, wills).await }
    });
    let results = futures::future::join_all(sends).await;
    results.into_iter().try_fold((), |(), result| result.map(drop))
}

/// Binds `session` to `user`. Steps:
/// 1. the store makes `session` the user's location, atomically, and says which it replaced;
/// 2. a replaced session of another gateway or id is kicked with `LOGGED_IN_ELSEWHERE`;
/// 3. the session's gateway marks it logged in; if it ended meanwhile the binding is undone.
async fn bind_user(
    store: Arc<dyn SessionStore>,
    gateways: Arc<dyn Gateways>,
    session: Session,
    user: u64,
) -> Result<(), Code> {
    let location = Location { gateway: session.gateway.clone(), session: session.id, login_at_ms: now_ms() };
    let previous = store.bind(user, location).await.map_err(unavailable)?;
    if let Some(previous) = previous.filter(|previous| !previous.is(&session.gateway, session.id)) {
        match gateways.kick(&previous.gateway, previous.session, Code::LOGGED_IN_ELSEWHERE).await {
            Ok(_) => {
                tracing::info!(user, old_gateway = %previous.gateway, old_session = previous.session, "logged in elsewhere: old session kicked")
            }
            // Its gateway is gone: so is the session.
            Err(code) => {
                tracing::warn!(user, old_gateway = %previous.gateway, ?code, "cannot kick the replaced session")
            }
        }
    }
    match gateways.bind(&session.gateway, session.id, user).await {
        Ok(true) => Ok(()),
        outcome => {
            // The session ended (or its gateway cannot be reached) before it was marked: undo.
            let _ = store.unbind(user, session.gateway.clone(), session.id).await;
            Err(outcome.err().unwrap_or(Code::UNAVAILABLE))
        }
    }
}

/// Pushes to the online ones of `users`: one batch per gateway, sent at once.
async fn push(
    store: Arc<dyn SessionStore>,
    gateways: Arc<dyn Gateways>,
    users: Vec<u64>,
    main: String,
    sub: String,
    body: Bytes,
) -> Result<Pushed, Code> {
    let found = store.locate(users.clone()).await.map_err(unavailable)?;
    let mut by_gateway: HashMap<String, Vec<u64>> = HashMap::new();
    let mut pushed = Pushed::default();
    for (user, location) in users.into_iter().zip(found) {
        match location {
            Some(location) => by_gateway.entry(location.gateway).or_default().push(location.session),
            None => pushed.offline.push(user),
        }
    }
    let sends = by_gateway.into_iter().map(|(gateway, sessions)| {
        let count = sessions.len();
        let batch = PushBatch { sessions, main: main.clone(), sub: sub.clone(), data: body.clone() };
        let gateways = gateways.clone();
        async move { (count, gateways.push(&gateway, batch).await) }
    });
    for (count, report) in futures::future::join_all(sends).await {
        match report {
            Ok(report) => {
                pushed.delivered += report.delivered;
                pushed.undelivered += report.dropped + report.offline;
            }
            Err(_) => pushed.undelivered += count,
        }
    }
    Ok(pushed)
}
