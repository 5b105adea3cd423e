//! The cache's behaviour, written once and run against every backend (memory here, Redis in
//! `bin/tests/cache.rs` against a real server). Public for backend tests outside this crate.
#![allow(clippy::unwrap_used)] // a test kit: a failure is a panic with its place

use mortar::cache::{Cache, CacheBackend, CacheError};
use std::{sync::Arc, time::Duration};

/// Runs every check against `backend`, which must hold no keys of the modules `conformance_a` and
/// `conformance_b`.
///
/// # Panics
/// When the backend does not behave.
pub async fn run(backend: Arc<dyn CacheBackend>) {
    let cache = Cache::new(backend.clone(), "conformance_a");
    let other = Cache::new(backend, "conformance_b");
    let short = Some(Duration::from_millis(200));
    let wait_out = Duration::from_millis(600);

    assert_eq!(cache.get::<String>("missing").await, Ok(None));
    cache.set("motd", "double xp", None).await.unwrap();
    assert_eq!(cache.get::<String>("motd").await, Ok(Some("double xp".into())));
    assert_eq!(other.get::<String>("motd").await, Ok(None), "modules do not see each other's keys");
    assert!(matches!(cache.get::<u64>("motd").await, Err(CacheError::Internal(_))), "not the type asked for");
    assert_eq!(cache.delete("motd").await, Ok(true));
    assert_eq!(cache.delete("motd").await, Ok(false));
    assert_eq!(cache.get::<String>("motd").await, Ok(None));

    cache.set("brief", &7u32, short).await.unwrap();
    assert_eq!(cache.get::<u32>("brief").await, Ok(Some(7)));
    tokio::time::sleep(wait_out).await;
    assert_eq!(cache.get::<u32>("brief").await, Ok(None), "expired");

    assert_eq!(cache.incr("hits", 1, None).await, Ok(1));
    assert_eq!(cache.incr("hits", 41, None).await, Ok(42));
    assert_eq!(cache.incr("hits", -2, None).await, Ok(40));
    assert_eq!(cache.get::<i64>("hits").await, Ok(Some(40)), "a counter reads as a number");
    cache.set("word", "hello", None).await.unwrap();
    assert!(matches!(cache.incr("word", 1, None).await, Err(CacheError::Internal(_))), "not an integer");

    assert_eq!(cache.incr("daily", 1, short).await, Ok(1));
    assert_eq!(cache.incr("daily", 1, None).await, Ok(2), "keeps the expiry it was created with");
    tokio::time::sleep(wait_out).await;
    assert_eq!(cache.incr("daily", 1, None).await, Ok(1), "expired, counted from 0 again");

    assert_eq!(cache.set_if_absent("lock", "node-a", short).await, Ok(true));
    assert_eq!(cache.set_if_absent("lock", "node-b", short).await, Ok(false));
    assert_eq!(cache.get::<String>("lock").await, Ok(Some("node-a".into())));
    tokio::time::sleep(wait_out).await;
    assert_eq!(cache.set_if_absent("lock", "node-b", None).await, Ok(true), "a lock frees itself");

    // Atomic under concurrency: 50 increments end at 50, one of 20 racing lockers wins.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.incr("race", 1, None).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(cache.get::<i64>("race").await, Ok(Some(50)));
    let lockers: Vec<_> = (0..20)
        .map(|n| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.set_if_absent("race-lock", &n, None).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for locker in lockers {
        won += usize::from(locker.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one racing locker wins");
}
