//! The memory cache (`cache.url = "memory"`, the default): this process only, at most
//! `cache.max_entries` entries (the least useful are evicted first), each with its own TTL.
//! A restart empties it. `incr` and `set_if_absent` are atomic per key. Sorted sets
//! (an order-statistic tree each) are kept beside the entries, never evicted and without expiry, until
//! deleted.

use super::ranked::Ranked;
use bytes::Bytes;
use moka::{Expiry, future::Cache, ops::compute::Op};
use mortar_abi::{
    cache::{CacheBackend, CacheError, SortedAnswer, SortedOp},
    future::BoxFuture,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// A cache in this process's memory; cheap to clone.
#[derive(Clone)]
pub struct MemoryCache {
    entries: Cache<String, Entry>,
    sorted: Arc<Mutex<HashMap<String, Ranked>>>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Option<Duration>,
    /// An `incr` of an existing counter keeps its expiry, as Redis does.
    keep_expiry: bool,
}

struct PerEntry;

impl Expiry<String, Entry> for PerEntry {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        left: Option<Duration>,
    ) -> Option<Duration> {
        if entry.keep_expiry { left } else { entry.ttl }
    }
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        let entries = Cache::builder().max_capacity(max_entries).expire_after(PerEntry).build();
        Self { entries, sorted: Arc::default() }
    }
}

impl CacheBackend for MemoryCache {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Bytes>, CacheError>> {
        let entries = self.entries.clone();
        Box::pin(async move { Ok(entries.get(&key).await.map(|entry| entry.value)) })
    }

    fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> BoxFuture<Result<(), CacheError>> {
        let entries = self.entries.clone();
        Box::pin(async move {
            entries.insert(key, Entry { value, ttl, keep_expiry: false }).await;
            Ok(())
        })
    }

    fn delete(&self, key: String) -> BoxFuture<Result<bool, CacheError>> {
        let entries = self.entries.clone();
        let set = self.sorted.lock().unwrap_or_else(PoisonError::into_inner).remove(&key).is_some();
        Box::pin(async move { Ok(entries.remove(&key).await.is_some() || set) })
    }

    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> BoxFuture<Result<i64, CacheError>> {
        let entries = self.entries.clone();
        Box::pin(async move {
            let mut outcome = Err(CacheError::Internal("the counter was not computed".into()));
            entries
                .entry(key.clone())
                .and_compute_with(|current| {
                    let (next, op) = match current {
                        None => {
                            (Ok(by), Some(Entry { value: by.to_string().into(), ttl, keep_expiry: false }))
                        }
                        Some(entry) => {
                            let counted = std::str::from_utf8(&entry.value().value)
                                .ok()
                                .and_then(|text| text.parse::<i64>().ok())
                                .ok_or_else(|| {
                                    CacheError::Internal(format!("`{key}` does not hold an integer"))
                                })
                                .and_then(|n| {
                                    n.checked_add(by).ok_or_else(|| {
                                        CacheError::Internal(format!("`{key}` would overflow"))
                                    })
                                });
                            match counted {
                                Ok(n) => (
                                    Ok(n),
                                    Some(Entry { value: n.to_string().into(), ttl: None, keep_expiry: true }),
                                ),
                                Err(error) => (Err(error), None),
                            }
                        }
                    };
                    outcome = next;
                    std::future::ready(op.map_or(Op::Nop, Op::Put))
                })
                .await;
            outcome
        })
    }

    fn set_if_absent(
        &self,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<Result<bool, CacheError>> {
        let entries = self.entries.clone();
        Box::pin(async move {
            let mut set = false;
            entries
                .entry(key)
                .and_compute_with(|current| {
                    set = current.is_none();
                    std::future::ready(match current {
                        None => Op::Put(Entry { value, ttl, keep_expiry: false }),
                        Some(_) => Op::Nop,
                    })
                })
                .await;
            Ok(set)
        })
    }

    fn sorted(&self, key: String, op: SortedOp) -> BoxFuture<Result<SortedAnswer, CacheError>> {
        let mut sets = self.sorted.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = match sets.get_mut(&key) {
            Some(set) => set.run(&key, op),
            None if matches!(op, SortedOp::Add(_) | SortedOp::Incr { .. }) => {
                sets.entry(key.clone()).or_default().run(&key, op)
            }
            None => Ranked::default().run(&key, op),
        };
        if sets.get(&key).is_some_and(Ranked::is_empty) {
            sets.remove(&key); // as Redis drops an emptied set
        }
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        crate::cache::conformance::run(Arc::new(MemoryCache::new(10_000))).await;
    }

    #[tokio::test]
    async fn it_is_bounded() {
        let cache = MemoryCache::new(100);
        for n in 0..1_000 {
            cache.set(format!("k{n}"), Bytes::from_static(b"1"), None).await.unwrap();
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entries.entry_count() <= 100, "{}", cache.entries.entry_count());
    }
}
