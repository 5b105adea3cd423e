//! The suite every session store backend passes: the memory backend in the host's unit tests,
//! Redis against a real server in `bin/tests/sessions.rs`.
#![doc(hidden)]
#![allow(clippy::unwrap_used)]

use super::{Location, SessionStore};
use std::{collections::HashSet, sync::Arc};

fn at(gateway: &str, session: u64) -> Location {
    Location { gateway: gateway.into(), session, login_at_ms: 1_764_000_000_000 + session % 1_000_000 }
}

/// Runs every check against `store`, which must start empty.
///
/// # Panics
/// On the first check that fails.
pub async fn run(store: Arc<dyn SessionStore>) {
    binds_replace_and_return_the_previous(&*store).await;
    unbind_removes_only_the_current_session(&*store).await;
    locate_answers_in_order(&*store).await;
    purge_removes_the_gateways_players_only(&*store).await;
    purge_below_keeps_a_restarted_gateways_new_logins(&*store).await;
    restore_never_replaces_a_login(&*store).await;
    racing_logins_leave_one_and_each_sees_a_distinct_predecessor(store).await;
}

async fn binds_replace_and_return_the_previous(store: &dyn SessionStore) {
    assert_eq!(store.locate(vec![1]).await.unwrap(), [None]);
    assert_eq!(store.bind(1, at("gw-a", 10)).await.unwrap(), None);
    assert_eq!(store.locate(vec![1]).await.unwrap(), [Some(at("gw-a", 10))]);
    assert_eq!(store.bind(1, at("gw-b", 20)).await.unwrap(), Some(at("gw-a", 10)));
    assert_eq!(store.locate(vec![1]).await.unwrap(), [Some(at("gw-b", 20))]);
    assert!(store.unbind(1, "gw-b".into(), 20).await.unwrap());
}

async fn restore_never_replaces_a_login(store: &dyn SessionStore) {
    // A user with no location gets the restored one, with its gateway's purge covering it.
    assert_eq!(store.restore(40, at("gw-r", 1)).await.unwrap(), None);
    assert_eq!(store.locate(vec![40]).await.unwrap(), [Some(at("gw-r", 1))]);
    assert_eq!(store.restore(40, at("gw-r", 1)).await.unwrap(), None, "its own location again");
    // A newer login made meanwhile stays; the restore says whose it is.
    store.bind(41, at("gw-s", 2)).await.unwrap();
    assert_eq!(store.restore(41, at("gw-r", 3)).await.unwrap(), Some(at("gw-s", 2)));
    assert_eq!(store.locate(vec![41]).await.unwrap(), [Some(at("gw-s", 2))]);
    // A restored location is replaced by a later login like any other.
    assert_eq!(store.bind(40, at("gw-s", 4)).await.unwrap(), Some(at("gw-r", 1)));
    assert_eq!(store.restore(42, at("gw-r", 5)).await.unwrap(), None);
    assert_eq!(store.purge_gateway("gw-r".into(), u64::MAX).await.unwrap(), 1);
    assert_eq!(
        store.locate(vec![40, 41, 42]).await.unwrap(),
        [Some(at("gw-s", 4)), Some(at("gw-s", 2)), None]
    );
    assert_eq!(store.purge_gateway("gw-s".into(), u64::MAX).await.unwrap(), 2);
}

async fn unbind_removes_only_the_current_session(store: &dyn SessionStore) {
    store.bind(2, at("gw-a", 11)).await.unwrap();
    store.bind(2, at("gw-a", 12)).await.unwrap();
    // The replaced session disconnecting late does not log its successor out.
    assert!(!store.unbind(2, "gw-a".into(), 11).await.unwrap());
    assert!(!store.unbind(2, "gw-b".into(), 12).await.unwrap());
    assert_eq!(store.locate(vec![2]).await.unwrap(), [Some(at("gw-a", 12))]);
    assert!(store.unbind(2, "gw-a".into(), 12).await.unwrap());
    assert!(!store.unbind(2, "gw-a".into(), 12).await.unwrap(), "already gone");
    assert_eq!(store.locate(vec![2]).await.unwrap(), [None]);
}

async fn locate_answers_in_order(store: &dyn SessionStore) {
    store.bind(3, at("gw-a", 13)).await.unwrap();
    store.bind(4, at("gw-b", 14)).await.unwrap();
    let found = store.locate(vec![4, 99, 3]).await.unwrap();
    assert_eq!(found, [Some(at("gw-b", 14)), None, Some(at("gw-a", 13))]);
    assert!(store.locate(Vec::new()).await.unwrap().is_empty());
    store.unbind(3, "gw-a".into(), 13).await.unwrap();
    store.unbind(4, "gw-b".into(), 14).await.unwrap();
}

async fn purge_removes_the_gateways_players_only(store: &dyn SessionStore) {
    for user in 10..15 {
        store.bind(user, at("gw-dead", user)).await.unwrap();
    }
    store.bind(20, at("gw-live", 20)).await.unwrap();
    // User 11 moved to the live gateway before the other died: it stays.
    store.bind(11, at("gw-live", 111)).await.unwrap();
    assert_eq!(store.purge_gateway("gw-dead".into(), u64::MAX).await.unwrap(), 4);
    let found = store.locate(vec![10, 11, 12, 20]).await.unwrap();
    assert_eq!(found, [None, Some(at("gw-live", 111)), None, Some(at("gw-live", 20))]);
    assert_eq!(store.purge_gateway("gw-dead".into(), u64::MAX).await.unwrap(), 0);
    assert_eq!(store.purge_gateway("gw-live".into(), u64::MAX).await.unwrap(), 2);
    assert_eq!(store.locate(vec![11, 20]).await.unwrap(), [None, None]);
}

async fn purge_below_keeps_a_restarted_gateways_new_logins(store: &dyn SessionStore) {
    // The previous run's sessions 5 and 6, the new run's (from 1000) 1000 and 1001.
    store.bind(30, at("gw-again", 5)).await.unwrap();
    store.bind(31, at("gw-again", 6)).await.unwrap();
    store.bind(32, at("gw-again", 1000)).await.unwrap();
    store.bind(31, at("gw-again", 1001)).await.unwrap();
    assert_eq!(store.purge_gateway("gw-again".into(), 1000).await.unwrap(), 1);
    let found = store.locate(vec![30, 31, 32]).await.unwrap();
    assert_eq!(found, [None, Some(at("gw-again", 1001)), Some(at("gw-again", 1000))]);
    // The kept logins are still the gateway's: purged when it dies, whatever their ids.
    store.bind(33, at("gw-again", u64::MAX - 1)).await.unwrap();
    assert_eq!(store.purge_gateway("gw-again".into(), 1000).await.unwrap(), 0);
    assert_eq!(store.purge_gateway("gw-again".into(), u64::MAX).await.unwrap(), 3);
    assert_eq!(store.locate(vec![31, 32, 33]).await.unwrap(), [None, None, None]);
}

async fn racing_logins_leave_one_and_each_sees_a_distinct_predecessor(store: Arc<dyn SessionStore>) {
    let mut logins = tokio::task::JoinSet::new();
    for session in 1..=50u64 {
        let store = store.clone();
        let gateway = if session % 2 == 0 { "gw-a" } else { "gw-b" };
        logins.spawn(async move { (session, store.bind(77, at(gateway, session)).await.unwrap()) });
    }
    let mut replaced = HashSet::new();
    let mut first = 0;
    while let Some(joined) = logins.join_next().await {
        match joined.unwrap().1 {
            Some(previous) => assert!(replaced.insert(previous.session), "{previous:?} replaced twice"),
            None => first += 1,
        }
    }
    assert_eq!(first, 1, "exactly one login found nobody bound");
    assert_eq!(replaced.len(), 49, "the other 49 each replaced a distinct session, to be kicked");
    let winner = store.locate(vec![77]).await.unwrap()[0].clone().unwrap();
    assert!(!replaced.contains(&winner.session), "the bound session was kicked");
    assert_eq!(replaced.len() + 1, 50);
    assert!(store.unbind(77, winner.gateway, winner.session).await.unwrap());
}
