//! Players for module code: login binding, pushes, kicks and presence, through the session store
//! and the gateways holding the sessions.

use super::gateways::Gateways;
use crate::{
    rpc::PushBatch,
    session::{Location, SessionError, SessionStore},
};
use bytes::Bytes;
use mortar::{Code, Session, ctx::Pushed};
use std::{collections::HashMap, sync::Arc, time::SystemTime};

fn unavailable(error: SessionError) -> Code {
    tracing::warn!(%error, "session store failed");
    Code::UNAVAILABLE
}

/// Binds `session` to `user` (see `Ctx::bind_user`). Steps:
/// 1. the store makes `session` the user's location, atomically, and says which it replaced;
/// 2. a replaced session of another gateway or id is kicked with `LOGGED_IN_ELSEWHERE`;
/// 3. the session's gateway marks it logged in; if it ended meanwhile the binding is undone.
pub(super) async fn bind_user(
    store: Arc<dyn SessionStore>,
    gateways: Arc<dyn Gateways>,
    session: Session,
    user: u64,
) -> Result<(), Code> {
    let login_at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0);
    let location = Location { gateway: session.gateway.clone(), session: session.id, login_at_ms };
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

/// Pushes `body` as `route` to the online ones of `users`: one batch per gateway, sent at once.
pub(super) async fn push(
    store: Arc<dyn SessionStore>,
    gateways: Arc<dyn Gateways>,
    users: Vec<u64>,
    route: String,
    body: Bytes,
) -> Result<Pushed, Code> {
    let Some((main, sub)) = route.split_once('.') else { return Err(Code::BAD_REQUEST) };
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
        let batch = PushBatch { sessions, main: main.to_owned(), sub: sub.to_owned(), data: body.clone() };
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

/// Pushes `body` as `route` to session `session` of `gateway`.
pub(super) async fn push_session(
    gateways: Arc<dyn Gateways>,
    gateway: String,
    session: u64,
    route: String,
    body: Bytes,
) -> Result<bool, Code> {
    let Some((main, sub)) = route.split_once('.') else { return Err(Code::BAD_REQUEST) };
    let batch = PushBatch { sessions: vec![session], main: main.to_owned(), sub: sub.to_owned(), data: body };
    Ok(gateways.push(&gateway, batch).await?.delivered == 1)
}

/// Kicks `user` wherever they are.
pub(super) async fn kick(
    store: Arc<dyn SessionStore>,
    gateways: Arc<dyn Gateways>,
    user: u64,
    reason: Code,
) -> Result<bool, Code> {
    let found = store.locate(vec![user]).await.map_err(unavailable)?;
    match found.into_iter().next().flatten() {
        Some(location) => gateways.kick(&location.gateway, location.session, reason).await,
        None => Ok(false),
    }
}

/// Whether each of `users` is online.
pub(super) async fn online(store: Arc<dyn SessionStore>, users: Vec<u64>) -> Result<Vec<bool>, Code> {
    Ok(store.locate(users).await.map_err(unavailable)?.iter().map(Option::is_some).collect())
}
