//! The cache's behaviour, written once and run against every backend (memory here, Redis in
//! `bin/tests/cache.rs` against a real server). Public for backend tests outside this crate.
#![allow(clippy::unwrap_used)] // a test kit: a failure is a panic with its place

use mortar::cache::{Cache, CacheBackend, CacheError, MAX_SCORE};
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
    sorted_sets(&cache, &other).await;
}

async fn sorted_sets(cache: &Cache, other: &Cache) {
    let board = cache.sorted_set("board");
    assert_eq!(board.len().await, Ok(0), "a missing set is empty");
    assert_eq!(board.rank("ann", false).await, Ok(None));
    for (member, score) in [("ann", 10), ("bob", 30), ("cid", 20), ("dee", 20)] {
        assert_eq!(board.add(member, score).await, Ok(true));
    }
    assert_eq!(other.sorted_set("board").len().await, Ok(0), "modules do not see each other's sets");
    let pairs = |list: &[(&str, i64)]| list.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect::<Vec<_>>();
    let ascending = pairs(&[("ann", 10), ("cid", 20), ("dee", 20), ("bob", 30)]);
    let descending: Vec<_> = ascending.iter().rev().cloned().collect();
    assert_eq!(board.range_by_rank(0, 10, false).await, Ok(ascending.clone()), "equal scores by member");
    assert_eq!(board.range_by_rank(0, 10, true).await, Ok(descending.clone()), "the whole order reversed");
    assert_eq!(board.range_by_rank(1, 2, true).await, Ok(descending[1..3].to_vec()));
    assert_eq!(board.range_by_rank(4, 2, false).await, Ok(Vec::new()), "past the end");
    assert_eq!(board.range_by_rank(0, 0, false).await, Ok(Vec::new()));
    assert_eq!(board.rank("ann", false).await, Ok(Some(0)));
    assert_eq!(board.rank("ann", true).await, Ok(Some(3)));
    assert_eq!(board.rank("dee", true).await, Ok(Some(1)));
    assert_eq!(board.score("cid").await, Ok(Some(20)));
    assert_eq!(board.score("zed").await, Ok(None));

    assert_eq!(board.add("ann", 40).await, Ok(false), "an existing member moves");
    assert_eq!(board.rank("ann", true).await, Ok(Some(0)));
    assert_eq!(board.len().await, Ok(4));
    assert_eq!(board.incr("eve", 5).await, Ok(5), "a missing member starts at 0");
    assert_eq!(board.incr("eve", -7).await, Ok(-2));

    assert_eq!(
        board.range_by_score(20..=30, false, 10).await,
        Ok(pairs(&[("cid", 20), ("dee", 20), ("bob", 30)]))
    );
    let above_20 = (std::ops::Bound::Excluded(20), std::ops::Bound::Unbounded);
    assert_eq!(board.range_by_score(above_20, true, 10).await, Ok(pairs(&[("ann", 40), ("bob", 30)])));
    assert_eq!(board.range_by_score(.., true, 2).await, Ok(pairs(&[("ann", 40), ("bob", 30)])), "a limit");
    assert_eq!(board.range_by_score(..0, false, 10).await, Ok(pairs(&[("eve", -2)])));
    assert_eq!(board.count(20..).await, Ok(4));
    assert_eq!(board.count(21..30).await, Ok(0));

    assert_eq!(board.remove("eve").await, Ok(true));
    assert_eq!(board.remove("eve").await, Ok(false));
    assert!(
        matches!(board.add("big", MAX_SCORE + 1).await, Err(CacheError::Internal(_))),
        "beyond exact scores"
    );
    assert_eq!(board.add("max", MAX_SCORE).await, Ok(true));
    assert_eq!(board.rank("max", true).await, Ok(Some(0)));
    assert_eq!(board.add("min", -MAX_SCORE).await, Ok(true));
    assert_eq!(board.rank("min", false).await, Ok(Some(0)));
    assert_eq!(cache.delete("board").await, Ok(true), "a set is deleted like any key");
    assert_eq!(board.len().await, Ok(0));

    // Exact ranks over many members with many ties, against the order computed here.
    let members: Vec<(String, i64)> =
        (0..2_000).map(|n: i64| (format!("m{n:05}"), (n * 7_919) % 101 - 50)).collect();
    let big = cache.sorted_set("big");
    for chunk in members.chunks(500) {
        assert_eq!(big.add_many(chunk.to_vec()).await, Ok(500));
    }
    let mut order = members.clone();
    order.sort_by(|(a, x), (b, y)| x.cmp(y).then(a.cmp(b)));
    for at in (0..order.len()).step_by(97) {
        let (member, _) = &order[at];
        assert_eq!(big.rank(member, false).await, Ok(Some(at as u64)), "{member}");
        assert_eq!(big.rank(member, true).await, Ok(Some((order.len() - 1 - at) as u64)), "{member}");
    }
    assert_eq!(big.range_by_rank(1_000, 50, false).await, Ok(order[1_000..1_050].to_vec()));
    let top: Vec<_> = order.iter().rev().take(30).cloned().collect();
    assert_eq!(big.range_by_rank(0, 30, true).await, Ok(top));
    let expected = order.iter().filter(|(_, score)| (-10..=10).contains(score)).count() as u64;
    assert_eq!(big.count(-10..=10).await, Ok(expected));

    // Atomic under concurrency: 50 increments of one member end at 50.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let big = big.clone();
            tokio::spawn(async move { big.incr("racer", 1).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(big.score("racer").await, Ok(Some(50)));
    assert_eq!(cache.delete("big").await, Ok(true));
}
