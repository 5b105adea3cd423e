//! A gateway's part of the cluster's session directory, when the gateways themselves are the
//! directory (`session.url = "memory"` on cluster nodes): each gateway knows the players logged in
//! on its own sessions, and workers ask the gateways (see `worker::directory`).
//!
//! Logins are totally ordered by [`Login`] (time, then gateway, then session): of two logins of one
//! player the later wins, wherever each lands. A login is *claimed* on its own gateway and
//! *evicts* the player from every other gateway, in any order:
//! 1. a claim kicks this gateway's older session of the player, and loses to a newer login this
//!    gateway holds or was told of;
//! 2. an evict kicks this gateway's older session of the player and is remembered for
//!    [`EVICTIONS_KEPT`], so that an older claim arriving after it loses.
//!
//! So, whatever order the messages of racing logins arrive in, exactly one session stays bound.

use mortar_backends::session::Location;
use mortar_cluster::rpc::Login;
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long an evict is remembered: longer than a login's claim can take to arrive after it (a
/// request's deadline is at most `gateway.request_timeout_ms`, 600 s at most; 60 s by far covers
/// the default 10 s).
pub const EVICTIONS_KEPT: Duration = Duration::from_secs(60);

/// The players logged in on one gateway's sessions.
pub struct Directory {
    node: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Players logged in here, and their login.
    users: HashMap<u64, Login>,
    /// The newest login elsewhere this gateway was told of, per player, and when it was told.
    evicted: HashMap<u64, (Login, Instant)>,
    /// When `evicted` was last swept of entries older than [`EVICTIONS_KEPT`].
    swept: Option<Instant>,
}

impl State {
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|swept| now.duration_since(swept) < Duration::from_secs(1)) {
            return;
        }
        self.swept = Some(now);
        self.evicted.retain(|_, (_, at)| now.duration_since(*at) < EVICTIONS_KEPT);
    }

    /// Whether a login newer than `login` of `user` is known here.
    fn newer_known(&self, user: u64, login: &Login, now: Instant) -> bool {
        let evicted = self
            .evicted
            .get(&user)
            .is_some_and(|(newer, at)| newer > login && now.duration_since(*at) < EVICTIONS_KEPT);
        evicted || self.users.get(&user).is_some_and(|current| current > login)
    }
}

impl Directory {
    /// The directory of gateway `node`.
    pub fn new(node: String) -> Self {
        Self { node, state: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records `login` (a session of this gateway) as `user`'s, unless a newer login of the user
    /// is known. `Ok` with the session it replaced here, if any, which the caller kicks.
    ///
    /// # Errors
    /// `Err(())` when a newer login won.
    #[allow(clippy::result_unit_err)]
    pub fn claim(&self, user: u64, login: Login) -> Result<Option<u64>, ()> {
        let now = Instant::now();
        self.with(|state| {
            state.sweep(now);
            if state.newer_known(user, &login, now) {
                return Err(());
            }
            let session = login.session;
            Ok(state.users.insert(user, login).map(|old| old.session).filter(|old| *old != session))
        })
    }

    /// Takes in that `user` logged in with `login` elsewhere: removes their older login here and
    /// returns its session, which the caller kicks.
    pub fn evict(&self, user: u64, login: Login) -> Option<u64> {
        let now = Instant::now();
        self.with(|state| {
            state.sweep(now);
            let kept = state.evicted.get(&user).is_some_and(|(newer, _)| *newer >= login);
            let replaced = match state.users.get(&user) {
                Some(current) if *current < login => state.users.remove(&user).map(|old| old.session),
                _ => None,
            };
            if !kept {
                state.evicted.insert(user, (login, now));
            }
            replaced
        })
    }

    /// Removes `user`'s login if it is still session `session` of this gateway; true when it did.
    pub fn release(&self, user: u64, session: u64) -> bool {
        self.with(|state| match state.users.get(&user) {
            Some(login) if login.session == session => state.users.remove(&user).is_some(),
            _ => false,
        })
    }

    /// The sessions here of each of `users`, in their order.
    pub fn sessions_of(&self, users: &[u64]) -> Vec<Option<u64>> {
        self.with(|state| users.iter().map(|user| state.users.get(user).map(|login| login.session)).collect())
    }

    /// Logged-in players here.
    pub fn len(&self) -> usize {
        self.with(|state| state.users.len())
    }

    /// Whether no player is logged in here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where each of `users` is logged in here, in their order.
    pub fn locate(&self, users: &[u64]) -> Vec<Option<Location>> {
        self.with(|state| {
            users.iter().map(|user| state.users.get(user).map(|login| self.location(login))).collect()
        })
    }

    fn location(&self, login: &Login) -> Location {
        Location { gateway: self.node.clone(), session: login.session, login_at_ms: login.at_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(at_ms: u64, gateway: &str, session: u64) -> Login {
        Login { at_ms, gateway: gateway.into(), session }
    }

    #[test]
    fn a_claim_replaces_an_older_session_here_and_loses_to_a_newer_one() {
        let directory = Directory::new("g1".into());
        assert_eq!(directory.claim(7, login(10, "g1", 1)), Ok(None));
        assert_eq!(directory.claim(7, login(20, "g1", 2)), Ok(Some(1)));
        assert_eq!(directory.claim(7, login(15, "g1", 3)), Err(()));
        assert_eq!(directory.sessions_of(&[7, 8]), vec![Some(2), None]);
    }

    #[test]
    fn whatever_order_claims_and_evicts_arrive_in_the_newer_login_stays() {
        // Logins A (older, on g1) and B (newer, on g2) of one player; each gateway gets the claim
        // of its own login and the evict of the other's, in either order.
        let (a, b) = (login(10, "g1", 1), login(20, "g2", 5));
        for evict_first in [false, true] {
            let (g1, g2) = (Directory::new("g1".into()), Directory::new("g2".into()));
            if evict_first {
                assert_eq!(g1.evict(7, b.clone()), None);
                assert_eq!(g1.claim(7, a.clone()), Err(()), "an older claim after a newer evict loses");
            } else {
                assert_eq!(g1.claim(7, a.clone()), Ok(None));
                assert_eq!(g1.evict(7, b.clone()), Some(1), "the older session is kicked");
            }
            assert_eq!(g2.evict(7, a.clone()), None);
            assert_eq!(g2.claim(7, b.clone()), Ok(None));
            assert_eq!(g1.len() + g2.len(), 1);
            assert_eq!(g2.sessions_of(&[7]), vec![Some(5)]);
        }
    }

    #[test]
    fn a_session_that_ended_releases_only_its_own_login() {
        let directory = Directory::new("g1".into());
        directory.claim(7, login(10, "g1", 1)).unwrap();
        assert!(!directory.release(7, 2));
        let found = directory.locate(&[7, 8]);
        assert_eq!(found, vec![Some(Location { gateway: "g1".into(), session: 1, login_at_ms: 10 }), None]);
        assert!(directory.release(7, 1));
        assert!(directory.is_empty());
    }
}
