//! Restores this gateway's logins in a session store that lost them: a Redis server restarted
//! without its data (or flushed) forgets who is online, while the players stay connected here.
//!
//! Every `session.resync_ms` the task asks the store's generation ([`SessionStore::generation`]);
//! when it differs from the last one seen, it restores the login of every session logged in here
//! and not kicked, with [`SessionStore::restore`], which never overwrites a location:
//! 1. the user has none: the session's location goes back (with the time this gateway marked it
//!    logged in); if the session ended or was kicked meanwhile it is unbound again, so no location
//!    outlives its session (an agent removes its session here before it unbinds it);
//! 2. the user has this session's location: nothing to do;
//! 3. the user has another location: a login made while the store was empty, or restored first
//!    by another gateway; it stays, and this session is kicked with `LOGGED_IN_ELSEWHERE`, so one
//!    session per user is left, as after any second login.
//!
//! A restore that fails (the store went away again) is retried at the next tick: the generation
//! is taken as seen only once every session was restored. Stops when `stop` is cancelled or the
//! gateway is gone.
//!
//! [`SessionStore::generation`]: mortar_backends::session::SessionStore::generation
//! [`SessionStore::restore`]: mortar_backends::session::SessionStore::restore

use super::{Gateway, WeakGateway};
use futures::StreamExt as _;
use mortar_abi::Code;
use mortar_backends::session::Location;
use mortar_telemetry::metrics as m;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Restores at once, per gateway.
const CONCURRENCY: usize = 32;

/// Runs the task (see the module docs); `every` zero runs none.
pub fn spawn(gateway: WeakGateway, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<String> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(gateway) = gateway.upgrade() else { return };
            let node = gateway.shared.node_id.clone();
            let generation = match gateway.shared.store.generation().await {
                Ok(generation) => generation,
                Err(error) => {
                    tracing::debug!(%node, %error, "session store generation unknown");
                    continue;
                }
            };
            if seen.as_deref() == Some(generation.as_str()) {
                continue;
            }
            let lost = seen.is_some();
            if lost {
                tracing::warn!(%node, "the session store lost its logins (restarted empty, or flushed): restoring this gateway's");
            }
            match restore(&gateway).await {
                Ok((restored, kicked)) => {
                    seen = Some(generation);
                    metrics::counter!(m::SESSIONS_RESTORED).increment(restored as u64);
                    if lost || restored + kicked > 0 {
                        tracing::warn!(%node, restored, kicked, "session store logins restored");
                    }
                }
                Err(error) => {
                    tracing::warn!(%node, %error, "cannot restore this gateway's logins yet: trying again");
                }
            }
        }
    })
}

/// Restores every logged-in session's location: how many it restored, and how many sessions it
/// kicked because a newer login held their user.
async fn restore(gateway: &Gateway) -> Result<(usize, usize), mortar_backends::session::SessionError> {
    let shared = &gateway.shared;
    let node = shared.node_id.clone();
    let outcomes: Vec<_> = futures::stream::iter(shared.sessions.logged_in())
        .map(|(session, user, login_at_ms)| {
            let location = Location { gateway: node.clone(), session, login_at_ms };
            async move {
                match shared.store.restore(user, location).await? {
                    None if shared.sessions.holds(session, user) => Ok((1, 0)),
                    None => {
                        // It ended or was kicked while its location went back: take it out again.
                        shared.store.unbind(user, shared.node_id.clone(), session).await?;
                        Ok((0, 0))
                    }
                    Some(held) => {
                        tracing::info!(node = %shared.node_id, session, user, other_gateway = %held.gateway, other_session = held.session, "logged in elsewhere while the session store was empty: this session kicked");
                        gateway.kick(session, Code::LOGGED_IN_ELSEWHERE);
                        Ok((0, 1))
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut totals = (0, 0);
    for outcome in outcomes {
        let (restored, kicked) = outcome?;
        totals = (totals.0 + restored, totals.1 + kicked);
    }
    Ok(totals)
}
