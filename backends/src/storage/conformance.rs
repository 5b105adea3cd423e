//! The store's behaviour, written once and run against every backend (embedded in the host's
//! unit tests, MongoDB in `bin/tests/mongo.rs` against a real server). Public for backend tests
//! outside this crate.
#![allow(clippy::unwrap_used)] // a test kit: a failure is a panic with its place

use mortar::{
    Code, Failure,
    store::{Cursor, Document, Index, SortedIndex, Store, StoreBackend, StoreError, UpdateError},
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A document with a unique and a lookup index. Implemented by hand, not derived: a derived type
/// is registered, and every node on MongoDB would prepare this test collection at start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Player {
    /// Unique when set.
    pub name: Option<String>,
    /// Looked up.
    pub guild: u64,
    /// Counted.
    pub coins: u64,
}

impl Document for Player {
    const COLLECTION: &'static str = "conformance_player";
    const INDEXES: &'static [Index] = &[Index::unique("name"), Index::lookup("guild")];
}

/// A change that renames the player.
fn rename(name: &str) -> impl FnMut(&mut Player) -> Result<(), Code> + '_ {
    move |p| {
        p.name = Some(name.into());
        Ok(())
    }
}

fn player(name: &str, guild: u64) -> Player {
    Player { name: Some(name.into()), guild, coins: 0 }
}

/// Runs every check against `backend`, which must hold no `conformance_player` documents.
///
/// # Panics
/// When the backend does not behave.
pub async fn run(backend: Arc<dyn StoreBackend>) {
    let store = Store::<Player>::new(backend);
    reads_and_inserts(&store).await;
    compare_and_set(&store).await;
    unique_and_lookup_indexes(&store).await;
    deletes(&store).await;
    concurrent_updates_lose_nothing(&store).await;
    upserts(&store).await;
    let entries = Store::<Entry>::new(store.backend());
    sorted_pages_and_counts(&entries).await;
    pages_stay_whole_under_writes(&entries).await;
    sorted_values_and_bad_queries(&Store::<Loose>::new(store.backend())).await;
    get_many(&entries).await;
}

/// A leaderboard entry: sorted by board, then score, then `tie`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The board; an entry without one is in no sorted index.
    pub board: Option<String>,
    /// The score.
    pub score: i64,
    /// Breaks ties.
    pub tie: i64,
}

impl Document for Entry {
    const COLLECTION: &'static str = "conformance_entry";
    const SORTED: &'static [SortedIndex] = &[SortedIndex::new("by_score", &["board", "score", "tie"])];
}

/// Any value in a sorted field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Loose {
    /// Sorted.
    pub key: serde_json::Value,
}

impl Document for Loose {
    const COLLECTION: &'static str = "conformance_loose";
    const SORTED: &'static [SortedIndex] = &[SortedIndex::new("by_key", &["key"])];
}

fn entry(board: &str, score: i64, tie: i64) -> Entry {
    Entry { board: Some(board.into()), score, tie }
}

/// Every page of `query`'s results, `limit` at a time, as ids.
async fn all_pages(query: impl Fn() -> mortar::store::Query<Entry>, limit: usize) -> Vec<u64> {
    let (mut ids, mut cursor) = (Vec::new(), None::<Cursor>);
    loop {
        let mut next = query().limit(limit);
        if let Some(cursor) = &cursor {
            // Through its string form, as a client would hold it.
            next = next.after(&cursor.to_string().parse().unwrap());
        }
        let page = next.page().await.unwrap();
        assert!(page.items.len() <= limit);
        ids.extend(page.items.iter().map(|item| item.id));
        match page.next {
            Some(after) => cursor = Some(after),
            None => return ids,
        }
        assert!(ids.len() < 10_000, "pages never end");
    }
}

async fn sorted_pages_and_counts(entries: &Store<Entry>) {
    // Board "a": ids 1..=40 with scores 0..=9 (four of each) and ties; board "b" and one without
    // a board beside them.
    let mut expected = Vec::new();
    for id in 1..=40_u64 {
        let (score, tie) = ((id % 10) as i64 - 3, -(id as i64 % 4));
        entries.insert(id, entry("a", score, tie)).await.unwrap();
        expected.push((score, tie, id));
    }
    for id in 41..=45 {
        entries.insert(id, entry("b", 100, 0)).await.unwrap();
    }
    entries.insert(46, Entry { board: None, score: 5, tie: 0 }).await.unwrap();
    expected.sort_unstable();
    let ascending: Vec<u64> = expected.iter().map(|(_, _, id)| *id).collect();
    let descending: Vec<u64> = ascending.iter().rev().copied().collect();

    let board_a = || entries.sorted("by_score").eq("a");
    assert_eq!(all_pages(board_a, 7).await, ascending, "ascending: score, then tie, then id");
    assert_eq!(all_pages(|| board_a().descending(), 7).await, descending);
    assert_eq!(all_pages(board_a, 40).await, ascending, "a full last page ends with an empty one");
    assert_eq!(board_a().count().await, Ok(40));
    assert_eq!(entries.sorted("by_score").count().await, Ok(45), "the entry without a board is in no index");
    assert_eq!(entries.sorted("by_score").eq("b").eq(100).count().await, Ok(5));

    // Ranges on the field after the equal ones.
    let in_range = |range: &dyn Fn(i64) -> bool| {
        expected.iter().filter(|(score, _, _)| range(*score)).map(|(_, _, id)| *id).collect::<Vec<_>>()
    };
    assert_eq!(all_pages(|| board_a().range(2..5), 3).await, in_range(&|s| (2..5).contains(&s)));
    assert_eq!(all_pages(|| board_a().range(2..=5), 3).await, in_range(&|s| (2..=5).contains(&s)));
    assert_eq!(all_pages(|| board_a().range(4..), 100).await, in_range(&|s| s >= 4));
    assert_eq!(all_pages(|| board_a().range(..0), 100).await, in_range(&|s| s < 0));
    let excluded = (std::ops::Bound::Excluded(1), std::ops::Bound::Excluded(4));
    assert_eq!(all_pages(|| board_a().range(excluded), 100).await, in_range(&|s| s > 1 && s < 4));
    let mut top: Vec<u64> = in_range(&|s| s >= 4);
    top.reverse();
    assert_eq!(all_pages(|| board_a().range(4..).descending(), 5).await, top);
    assert_eq!(board_a().range(4..).count().await, Ok(12), "scores 4, 5 and 6, four each");
    let (high, low) = (7, 3);
    assert_eq!(board_a().range(high..low).count().await, Ok(0), "an empty range");
    assert_eq!(board_a().eq(6).count().await, Ok(4));
    assert_eq!(entries.sorted("by_score").eq("c").count().await, Ok(0));

    // A write moves the document in the index; a delete takes it out.
    entries
        .update(1, |e| {
            e.score = 1000;
            Ok(())
        })
        .await
        .unwrap();
    let first = board_a().descending().limit(1).page().await.unwrap();
    assert_eq!(first.items.iter().map(|item| item.id).collect::<Vec<_>>(), [1]);
    assert_eq!(board_a().count().await, Ok(40), "moved, not added");
    entries.delete(1).await.unwrap();
    assert_eq!(board_a().count().await, Ok(39));
    assert_eq!(board_a().range(1000..).count().await, Ok(0));
    entries.insert(1, entry("a", -2, -1)).await.unwrap();
}

async fn pages_stay_whole_under_writes(entries: &Store<Entry>) {
    // Board "w": scores 10, 20, … 100. Read two pages of three; between them, a document goes in
    // before the cursor and one after it: the first is not seen, the second is, nothing twice.
    for n in 1..=10_u64 {
        entries.insert(1000 + n, entry("w", 10 * n as i64, 0)).await.unwrap();
    }
    let board = || entries.sorted("by_score").eq("w").limit(3);
    let first = board().page().await.unwrap();
    let scores =
        |page: &mortar::store::Page<Entry>| page.items.iter().map(|item| item.doc.score).collect::<Vec<_>>();
    assert_eq!(scores(&first), [10, 20, 30]);
    entries.insert(2001, entry("w", 15, 0)).await.unwrap();
    entries.insert(2002, entry("w", 35, 0)).await.unwrap();
    let second = board().after(first.next.as_ref().unwrap()).page().await.unwrap();
    assert_eq!(scores(&second), [35, 40, 50]);
    // The document the cursor points at is deleted: the next page still starts after it.
    entries.delete(second.items[2].id).await.unwrap();
    let third = board().after(second.next.as_ref().unwrap()).page().await.unwrap();
    assert_eq!(scores(&third), [60, 70, 80]);
}

async fn sorted_values_and_bad_queries(loose: &Store<Loose>) {
    for (id, key) in
        [(1, serde_json::json!(3)), (2, "b".into()), (3, true.into()), (4, (-7).into()), (5, "a".into())]
    {
        loose.insert(id, Loose { key }).await.unwrap();
    }
    loose.insert(6, Loose { key: serde_json::Value::Null }).await.unwrap();
    let ids =
        |page: mortar::store::Page<Loose>| page.items.into_iter().map(|item| item.id).collect::<Vec<_>>();
    let all = loose.sorted("by_key").page().await.unwrap();
    assert_eq!(
        ids(all),
        [4, 1, 5, 2, 3],
        "integers, then strings by their bytes, then booleans; null is out"
    );
    let from_zero = loose.sorted("by_key").range(0..).page().await.unwrap();
    assert_eq!(ids(from_zero), [1], "a bound keeps the range to its value's type");
    let strings = loose.sorted("by_key").range("a"..).page().await.unwrap();
    assert_eq!(ids(strings), [5, 2]);

    // Values no sorted index orders are refused on write, for every backend alike.
    for key in [
        serde_json::json!(1.5),
        serde_json::json!([1]),
        serde_json::json!({"a": 1}),
        serde_json::json!(u64::MAX),
    ] {
        let refused = loose.insert(10, Loose { key: key.clone() }).await;
        assert!(matches!(refused, Err(StoreError::Internal(_))), "{key} is refused: {refused:?}");
    }
    assert_eq!(loose.try_get(10).await, Ok(None));

    // What a client could send: a cursor that is not one, one of another query, a value no index
    // orders. BAD_REQUEST with a reason, never INTERNAL.
    for text in ["", "garbage!", "W10=", &"A".repeat(5000)] {
        let parsed = text.parse::<Cursor>();
        assert!(matches!(parsed, Err(StoreError::Invalid(_))), "{text:?} is not a cursor");
    }
    let one_field = loose.sorted("by_key").limit(1).page().await.unwrap().next.unwrap();
    let entries = Store::<Entry>::new(loose.backend());
    let wrong = entries.sorted("by_score").eq("a").after(&one_field).page().await;
    assert!(matches!(wrong, Err(StoreError::Invalid(_))), "a cursor of another query: {wrong:?}");
    let failure = Failure::from(wrong.unwrap_err());
    assert_eq!(failure.code(), Code::BAD_REQUEST);
    assert!(failure.reason().is_some());
    let too_many = entries.sorted("by_score").eq("a").eq(1).eq(2).count().await;
    assert!(matches!(too_many, Err(StoreError::Invalid(_))), "{too_many:?}");
    let fraction = entries.sorted("by_score").eq("a").range(1.5..).count().await;
    assert!(matches!(fraction, Err(StoreError::Invalid(_))), "{fraction:?}");
    let unknown = entries.sorted("by_nothing").count().await;
    assert!(matches!(unknown, Err(StoreError::Internal(_))), "{unknown:?}");
}

async fn get_many(entries: &Store<Entry>) {
    let found = entries.get_many(&[3, 999_999, 2, 3, u64::MAX]).await.unwrap();
    assert_eq!(found.iter().map(|item| item.id).collect::<Vec<_>>(), [3, 2], "in the order asked, each once");
    assert_eq!(found[0], entries.get(3).await.unwrap());
    assert_eq!(entries.get_many(&[]).await, Ok(Vec::new()));
}

async fn reads_and_inserts(store: &Store<Player>) {
    assert_eq!(store.get(1).await, Err(StoreError::NotFound));
    assert_eq!(store.try_get(1).await, Ok(None));
    let inserted = store.insert(1, player("ann", 7)).await.unwrap();
    assert_eq!((inserted.id, inserted.version), (1, 1));
    assert_eq!(store.get(1).await.unwrap(), inserted);
    assert_eq!(store.insert(1, player("other", 7)).await, Err(StoreError::AlreadyExists { index: None }));
    let taken = store.insert(2, player("ann", 8)).await;
    assert_eq!(taken, Err(StoreError::AlreadyExists { index: Some("name".into()) }));
    assert_eq!(taken.unwrap_err().code(), Code::ALREADY_EXISTS);
    assert_eq!(store.try_get(2).await, Ok(None), "a refused insert writes nothing");
    // Ids above what every backend stores name no document, and are never written.
    assert_eq!(store.get(u64::MAX).await, Err(StoreError::NotFound));
    assert_eq!(store.delete(u64::MAX).await, Ok(false));
    assert!(matches!(store.insert(u64::MAX, player("max", 1)).await, Err(StoreError::Internal(_))));
}

async fn compare_and_set(store: &Store<Player>) {
    let read = store.get(1).await.unwrap();
    let mut first = read.clone();
    first.doc.coins = 10;
    let saved = store.save(first).await.unwrap();
    assert_eq!(saved.version, 2);
    let mut stale = read;
    stale.doc.coins = 99;
    assert_eq!(store.save(stale).await, Err(StoreError::Conflict), "a stale version is refused");
    assert_eq!(store.get(1).await.unwrap().doc.coins, 10);

    let (updated, before) = store
        .update(1, |p| {
            p.coins += 5;
            Ok(p.coins - 5)
        })
        .await
        .unwrap();
    assert_eq!((updated.version, updated.doc.coins, before), (3, 15, 10));
    let refused = store.update(1, |_| Err::<(), _>(Code::module(1001))).await;
    assert_eq!(refused, Err(UpdateError::Refused(Code::module(1001))));
    assert_eq!(store.get(1).await.unwrap().version, 3, "a refused change writes nothing");
    assert_eq!(store.update(404, |_| Ok(())).await, Err(UpdateError::Store(StoreError::NotFound)));
}

async fn unique_and_lookup_indexes(store: &Store<Player>) {
    store.insert(2, player("bob", 7)).await.unwrap();
    store.insert(3, player("cid", 8)).await.unwrap();
    store.insert(4, Player { name: None, guild: 7, coins: 0 }).await.unwrap();
    store.insert(5, Player { name: None, guild: 9, coins: 0 }).await.unwrap();

    // Taking a name that is held is refused; once freed, it can be taken.
    let clash = store.update(2, rename("ann")).await;
    assert_eq!(clash, Err(UpdateError::Store(StoreError::AlreadyExists { index: Some("name".into()) })));
    store.update(1, rename("anna")).await.unwrap();
    store.update(2, rename("ann")).await.unwrap();
    assert_eq!(store.find_one("name", "ann").await.unwrap().map(|p| p.id), Some(2));
    assert_eq!(store.find_one("name", "anna").await.unwrap().map(|p| p.id), Some(1));
    assert_eq!(store.find_one("name", "bob").await.unwrap(), None, "the old value left the index");

    let guild7: Vec<u64> = store.find("guild", 7, 10).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(guild7, [1, 2, 4], "by ascending id");
    let first_two: Vec<u64> = store.find("guild", 7, 2).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(first_two, [1, 2]);
    assert_eq!(store.count().await, Ok(5));
    assert_eq!(store.count_where("guild", 7).await, Ok(3));
    assert_eq!(store.count_where("guild", 100).await, Ok(0));
    // Moving a document moves its index entry.
    store
        .update(4, |p| {
            p.guild = 8;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(store.count_where("guild", 7).await, Ok(2));
    assert_eq!(store.count_where("guild", 8).await, Ok(2));
    assert!(matches!(store.find("coins", 0, 10).await, Err(StoreError::Internal(_))), "coins is not indexed");
}

async fn deletes(store: &Store<Player>) {
    assert_eq!(store.delete(3).await, Ok(true));
    assert_eq!(store.delete(3).await, Ok(false));
    assert_eq!(store.try_get(3).await, Ok(None));
    assert_eq!(store.count_where("guild", 8).await, Ok(1));
    // Its unique value is free again.
    store.insert(6, player("cid", 1)).await.unwrap();
    assert_eq!(store.count().await, Ok(5));
}

async fn concurrent_updates_lose_nothing(store: &Store<Player>) {
    let start = store.insert(100, player("counter", 0)).await.unwrap().doc.coins;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update(100, |p| {
                        p.coins += 1;
                        Ok(())
                    })
                    .await
                    .map(drop)
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let end = store.get(100).await.unwrap();
    assert_eq!(end.doc.coins, start + 50, "50 concurrent increments end at exactly +50");
    assert_eq!(end.version, 51);
}

async fn upserts(store: &Store<Player>) {
    let (created, _) = store
        .upsert(200, |p| {
            p.coins += 3;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((created.version, created.doc.coins), (1, 3));
    let (updated, _) = store
        .upsert(200, |p| {
            p.coins += 3;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((updated.version, updated.doc.coins), (2, 6));
}
