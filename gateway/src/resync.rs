//! Keeps this gateway's logins in the session store right, through the workers (the store's one
//! writer): purges those a previous run of this gateway left, and restores its logins in a store
//! that lost them (a Redis server restarted without its data, or flushed, forgets who is online
//! while the players stay connected here).
//!
//! At start the task asks a worker to purge this gateway's logins of sessions below this run's
//! first session id ([`Logins::Purge`]), again at each tick until one did: they point at sessions
//! that are gone, and would show their players online.
//!
//! Every `session.resync_ms` the task asks the store's generation ([`Logins::Generation`]); when
//! it differs from the last one seen, it restores the login of every session logged in here and
//! not kicked, with [`Logins::Restore`], which never overwrites a location:
//! 1. the user has none: the session's location goes back (with the time this gateway marked it
//!    logged in); if the session ended or was kicked meanwhile it is unbound again, so no location
//!    outlives its session (an agent removes its session here before it reports its end);
//! 2. the user has this session's location: nothing to do;
//! 3. the user has another location: a login made while the store was empty, or restored first
//!    by another gateway; it stays, and this session is kicked with `LOGGED_IN_ELSEWHERE`, so one
//!    session per user is left, as after any second login.
//!
//! A restore that fails (the store went away again) is retried at the next tick: the generation
//! is taken as seen only once every session was restored. Stops when `stop` is cancelled or the
//! gateway is gone.

use super::{Gateway, WeakGateway};
use futures::StreamExt as _;
use mortar_abi::Code;
use mortar_backends::session::Location;
use mortar_cluster::rpc::{Logins, LoginsAnswer};
use mortar_telemetry::metrics as m;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Restores at once, per gateway.
const CONCURRENCY: usize = 32;

/// How soon a first purge or generation read that found no worker (the gateway is starting) is
/// tried again.
const START_RETRY: Duration = Duration::from_millis(200);

/// Runs the task (see the module docs); `every` zero only purges.
pub fn spawn(gateway: WeakGateway, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut purged, mut seen, mut first) = (false, None::<String>, true);
        loop {
            // At once, then every `every`; sooner while the start's purge or first read is due.
            let settled = purged && (every.is_zero() || seen.is_some());
            let wait = if first {
                Duration::ZERO
            } else if settled {
                every
            } else {
                START_RETRY
            };
            first = false;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let Some(gateway) = gateway.upgrade() else { return };
            let node = String::from(&*gateway.shared.node_id);
            if !purged {
                let below = gateway.shared.first_session;
                match gateway.shared.relay.logins(Logins::Purge { gateway: node.clone(), below }).await {
                    Ok(LoginsAnswer::Purged(0)) => purged = true,
                    Ok(answer) => {
                        tracing::info!(%node, ?answer, "removed logins left by this gateway's previous run");
                        purged = true;
                    }
                    Err(code) => {
                        tracing::debug!(%node, ?code, "cannot purge this gateway's previous run yet: trying again");
                    }
                }
            }
            if every.is_zero() {
                if purged {
                    return;
                }
                continue;
            }
            let generation = match gateway.shared.relay.logins(Logins::Generation).await {
                Ok(LoginsAnswer::Generation(generation)) => generation,
                other => {
                    tracing::debug!(%node, ?other, "session store generation unknown");
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
                Err(code) => {
                    tracing::warn!(%node, ?code, "cannot restore this gateway's logins yet: trying again");
                }
            }
        }
    })
}

/// Restores every logged-in session's location: how many it restored, and how many sessions it
/// kicked because a newer login held their user.
async fn restore(gateway: &Gateway) -> Result<(usize, usize), Code> {
    let shared = &gateway.shared;
    let node = String::from(&*shared.node_id);
    let outcomes: Vec<_> = futures::stream::iter(shared.sessions.logged_in())
        .map(|(session, user, login_at_ms)| {
            let location = Location { gateway: node.clone(), session, login_at_ms };
            async move {
                let held = match shared.relay.logins(Logins::Restore { user, location }).await? {
                    LoginsAnswer::Restored(held) => held,
                    _ => return Err(Code::INTERNAL),
                };
                match held {
                    None if shared.sessions.holds(session, user) => Ok((1, 0)),
                    None => {
                        // It ended or was kicked while its location went back: take it out again.
                        let node = String::from(&*shared.node_id);
                        shared.relay.logins(Logins::Ended { user, gateway: node, session }).await?;
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
