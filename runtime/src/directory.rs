//! The gateways as the cluster's session directory (`session.url = "memory"` on cluster nodes):
//! no session store at all; each gateway knows the players logged in on its own sessions
//! (`gateway::directory`), and a worker asks every gateway it knows.
//!
//! What each operation costs, with G gateways:
//! - a login: one `claim` to the session's gateway and one `evict` to each other gateway, sent at
//!   once (G calls, one round trip);
//! - a push to any number of players, a kick, an online check: one call to each gateway, sent at
//!   once (G calls, one round trip), against one Redis round trip plus one call per gateway
//!   holding a player with a Redis session store.
//!
//! A gateway that cannot be dialled is skipped until its reconnect backoff passes (see
//! [`GatewayPool::gateway_ids`]): its players cannot be reached, so they count as offline. One
//! that is connected but fails a call makes the players no gateway reported count as
//! undelivered (nobody knows whether they are online).

use super::{
    gateways::GatewayPool,
    players::{Players, now_ms},
};
use bytes::Bytes;
use futures::future::join_all;
use mortar_abi::{
    Code,
    future::BoxFuture,
    host::{Pushed, Session, SessionsPushed},
};
use mortar_backends::session::Location;
use mortar_cluster::rpc::{Claim, Login, Logins, LoginsAnswer, Wills};
use std::{collections::HashSet, sync::Arc};

/// Players found by asking the gateways.
pub struct GatewayDirectory {
    pool: GatewayPool,
}

impl GatewayDirectory {
    /// Asks the gateways of `pool`.
    pub fn new(pool: GatewayPool) -> Self {
        Self { pool }
    }
}

impl Players for GatewayDirectory {
    fn bind(&self, session: Session, user: u64) -> BoxFuture<Result<(), Code>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let login = Login { at_ms: now_ms(), gateway: session.gateway.clone(), session: session.id };
            let evicts = pool.gateway_ids().into_iter().filter(|id| *id != session.gateway).map(|gateway| {
                let (pool, login) = (pool.clone(), login.clone());
                async move {
                    if let Err(code) = pool.evict(&gateway, user, login).await {
                        tracing::warn!(user, %gateway, ?code, "cannot tell a gateway of a login: an older session of the player there stays until it is reached");
                    }
                }
            });
            let claim = pool.claim(&session.gateway, session.id, user, login.at_ms);
            let (claimed, _) = futures::join!(claim, join_all(evicts));
            match claimed {
                Ok(Claim::Bound) => Ok(()),
                Ok(Claim::Superseded) => Err(Code::LOGGED_IN_ELSEWHERE),
                Ok(Claim::Gone) => Err(Code::UNAVAILABLE),
                Err(code) => {
                    tracing::warn!(user, gateway = %session.gateway, ?code, "login failed: the session's gateway cannot be reached");
                    Err(code)
                }
            }
        })
    }

    fn push(
        &self,
        users: Vec<u64>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<Pushed, Code>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let asks = pool.gateway_ids().into_iter().map(|gateway| {
                let (pool, users, main, sub, body) =
                    (pool.clone(), users.clone(), main.clone(), sub.clone(), body.clone());
                async move { pool.push_users(&gateway, users, main, sub, body).await }
            });
            let mut pushed = Pushed::default();
            let mut found = HashSet::new();
            let mut all_answered = true;
            for answer in join_all(asks).await {
                match answer {
                    Ok(answer) => {
                        pushed.delivered += answer.report.delivered;
                        pushed.undelivered += answer.report.dropped + answer.report.offline;
                        found.extend(answer.found);
                    }
                    Err(_) => all_answered = false,
                }
            }
            let unfound = users.into_iter().filter(|user| !found.contains(user));
            if all_answered {
                pushed.offline = unfound.collect();
            } else {
                pushed.undelivered += unfound.count();
            }
            Ok(pushed)
        })
    }

    fn push_sessions(
        &self,
        sessions: Vec<(String, u64)>,
        main: String,
        sub: String,
        body: Bytes,
    ) -> BoxFuture<Result<SessionsPushed, Code>> {
        Box::pin(super::players::push_sessions(Arc::new(self.pool.clone()), sessions, main, sub, body))
    }

    fn wills(&self, sessions: Vec<(String, u64)>, wills: Wills) -> BoxFuture<Result<(), Code>> {
        Box::pin(super::players::send_wills(Arc::new(self.pool.clone()), sessions, wills))
    }

    fn kick(&self, user: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let asks = pool.gateway_ids().into_iter().map(|gateway| {
                let pool = pool.clone();
                async move { pool.kick_user(&gateway, user, reason).await }
            });
            // A gateway that cannot be asked holds no player that could be kicked now.
            Ok(join_all(asks).await.contains(&Ok(true)))
        })
    }

    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, Code>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let asks = pool.gateway_ids().into_iter().map(|gateway| {
                let (pool, users) = (pool.clone(), users.clone());
                async move { pool.locate(&gateway, users).await }
            });
            let mut located: Vec<Option<Location>> = vec![None; users.len()];
            // A gateway that cannot be asked holds no player that can be reached now.
            for found in join_all(asks).await.into_iter().filter_map(Result::ok) {
                for (slot, location) in located.iter_mut().zip(found) {
                    // Two gateways may briefly both hold a player mid-login: the later wins.
                    let newer =
                        |new: &Location| slot.as_ref().is_none_or(|old| new.login_at_ms > old.login_at_ms);
                    if location.as_ref().is_some_and(newer) {
                        *slot = location;
                    }
                }
            }
            Ok(located)
        })
    }

    fn logins(&self, change: Logins) -> BoxFuture<Result<LoginsAnswer, Code>> {
        // Each gateway keeps its own logins here: none asks a worker to change them.
        tracing::warn!(
            ?change,
            "a gateway asked to change logins, but the gateways are the session directory"
        );
        Box::pin(std::future::ready(Err(Code::BAD_REQUEST)))
    }
}
