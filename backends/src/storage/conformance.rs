//! The store's behaviour, written once and run against every backend (embedded in the host's
//! unit tests, MongoDB in `bin/tests/mongo.rs` against a real server). Public for backend tests
//! outside this crate.
#![allow(clippy::unwrap_used)] // a test kit: a failure is a panic with its place

use mortar::{
    Code,
    store::{Document, Index, Store, StoreBackend, StoreError, UpdateError},
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
