//! The cache: short-lived values, counters and locks a module keeps beside its documents.
//!
//! ```no_run
//! # async fn example(ctx: mortar::Ctx) -> Result<(), mortar::Code> {
//! use std::time::Duration;
//! let cache = ctx.cache();
//! cache.set("motd", &"double xp tonight", Some(Duration::from_secs(60))).await?;
//! let motd: Option<String> = cache.get("motd").await?;
//! let logins = cache.incr("logins:today", 1, Some(Duration::from_secs(86_400))).await?;
//! if cache.set_if_absent("lock:guild:7", &ctx.node_id(), Some(Duration::from_secs(5))).await? {
//!     // this request holds the lock for at most 5 s
//! }
//! # Ok(()) }
//! ```
//!
//! Keys belong to the module that uses them: `ctx.cache()` in module `pack` reads and writes
//! `pack:…` only, so modules never clash. Values are JSON (what `serde_json` writes); counters
//! are integers that [`Cache::incr`] changes atomically. A cache may lose anything at any time
//! (eviction, a restart of the memory cache): keep what must last in the store.
//!
//! [`Cache::sorted_set`] gives a sorted set: members with integer scores and their ranks in
//! O(log n), for leaderboards (Redis ZSETs, or an order-statistic tree in memory):
//!
//! ```no_run
//! # async fn example(ctx: mortar::Ctx) -> Result<(), mortar::Code> {
//! let board = ctx.cache().sorted_set("board:daily");
//! board.add("ann", 1200).await?;
//! board.incr("bob", 50).await?;
//! let rank = board.rank("ann", true).await?;                 // Some(0): the highest first
//! let top = board.range_by_rank(0, 10, true).await?;         // [("ann", 1200), ("bob", 50)]
//! # let _ = (rank, top); Ok(()) }
//! ```

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::{ops::Bound, ops::RangeBounds, sync::Arc, time::Duration};

pub use mortar_abi::cache::{CacheBackend, CacheError, MAX_SCORE, SortedAnswer, SortedOp};

/// A module's view of the cache: its keys, typed values. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    backend: Arc<dyn CacheBackend>,
    /// `MODULE:`, put before every key.
    prefix: String,
}

impl Cache {
    /// The keys of `module` in `backend`. Modules get theirs from [`Ctx::cache`](crate::Ctx::cache).
    pub fn new(backend: Arc<dyn CacheBackend>, module: &str) -> Self {
        Self { backend, prefix: format!("{module}:") }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value at `key`, decoded as `T`, if set.
    ///
    /// # Errors
    /// `INTERNAL` when the value is not the JSON of a `T`; `UNAVAILABLE`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        match self.backend.get(self.key(key)).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| CacheError::Internal(format!("cached `{key}` does not decode: {error}"))),
        }
    }

    /// Sets `key` to `value`, expiring after `ttl` (none: kept until evicted or deleted).
    ///
    /// # Errors
    /// `UNAVAILABLE`, `INTERNAL`.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.backend.set(self.key(key), encode(value)?, ttl).await
    }

    /// Removes `key`; whether it was set.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        self.backend.delete(self.key(key)).await
    }

    /// Adds `by` to the counter at `key` (created at 0 with `ttl` when missing); the new value.
    ///
    /// # Errors
    /// `INTERNAL` when `key` holds something else than an integer; `UNAVAILABLE`.
    pub async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> Result<i64, CacheError> {
        self.backend.incr(self.key(key), by, ttl).await
    }

    /// Sets `key` to `value` only if it is not set; whether this call set it. With a `ttl`, a
    /// short lock that frees itself if its holder dies.
    ///
    /// # Errors
    /// `UNAVAILABLE`, `INTERNAL`.
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        self.backend.set_if_absent(self.key(key), encode(value)?, ttl).await
    }
}

impl Cache {
    /// The sorted set at `key` (deleted with [`Cache::delete`]).
    pub fn sorted_set(&self, key: &str) -> SortedSet {
        SortedSet { backend: self.backend.clone(), key: self.key(key) }
    }
}

/// A sorted set in the cache: members (strings) with integer scores within ±[`MAX_SCORE`],
/// ordered by score, equal scores by member (their bytes); `descending` reverses the whole order
/// (equal scores too), as Redis does. Ranks are 0-based. A set missing from the cache (Redis
/// restarted empty, a new node) reads as empty: keep its truth in the store and rebuild it from
/// there ([`SortedSet::add_many`]). Cheap to clone.
#[derive(Clone)]
pub struct SortedSet {
    backend: Arc<dyn CacheBackend>,
    key: String,
}

/// A score out of what a sorted set keeps exactly.
fn check_score(score: i64) -> Result<i64, CacheError> {
    if score.abs() <= MAX_SCORE {
        Ok(score)
    } else {
        Err(CacheError::Internal(format!(
            "score {score} is beyond ±{MAX_SCORE}, which a sorted set keeps exactly"
        )))
    }
}

fn unexpected(answer: &SortedAnswer) -> CacheError {
    CacheError::Internal(format!("the cache answered a sorted-set operation with {answer:?}"))
}

impl SortedSet {
    async fn run(&self, op: SortedOp) -> Result<SortedAnswer, CacheError> {
        self.backend.sorted(self.key.clone(), op).await
    }

    async fn count_of(&self, op: SortedOp) -> Result<u64, CacheError> {
        match self.run(op).await? {
            SortedAnswer::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    async fn members_of(&self, op: SortedOp) -> Result<Vec<(String, i64)>, CacheError> {
        match self.run(op).await? {
            SortedAnswer::Members(members) => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    async fn score_of(&self, op: SortedOp) -> Result<Option<i64>, CacheError> {
        match self.run(op).await? {
            SortedAnswer::Score(score) => Ok(score),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets `member`'s score (adding it when missing); whether it was added.
    ///
    /// # Errors
    /// `INTERNAL` for a score beyond ±[`MAX_SCORE`]; `UNAVAILABLE`.
    pub async fn add(&self, member: &str, score: i64) -> Result<bool, CacheError> {
        Ok(self.add_many(vec![(member.to_owned(), score)]).await? == 1)
    }

    /// Sets the scores of many members at once (a rebuild from the store, in batches); how many
    /// were added.
    ///
    /// # Errors
    /// As [`SortedSet::add`].
    pub async fn add_many(&self, entries: Vec<(String, i64)>) -> Result<u64, CacheError> {
        for (_, score) in &entries {
            check_score(*score)?;
        }
        self.count_of(SortedOp::Add(entries)).await
    }

    /// Adds `by` to `member`'s score (a missing member starts at 0); the new score.
    ///
    /// # Errors
    /// `INTERNAL` when the score would leave ±[`MAX_SCORE`]; `UNAVAILABLE`.
    pub async fn incr(&self, member: &str, by: i64) -> Result<i64, CacheError> {
        let score = self.score_of(SortedOp::Incr { member: member.to_owned(), by: check_score(by)? }).await?;
        check_score(score.ok_or_else(|| CacheError::Internal("an increment answered no score".into()))?)
    }

    /// Removes `member`; whether it was there.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn remove(&self, member: &str) -> Result<bool, CacheError> {
        Ok(self.count_of(SortedOp::Remove(vec![member.to_owned()])).await? > 0)
    }

    /// `member`'s score, if it is in the set.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn score(&self, member: &str) -> Result<Option<i64>, CacheError> {
        self.score_of(SortedOp::Score(member.to_owned())).await
    }

    /// `member`'s 0-based rank from the lowest score, or from the highest when `descending`.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn rank(&self, member: &str, descending: bool) -> Result<Option<u64>, CacheError> {
        match self.run(SortedOp::Rank { member: member.to_owned(), descending }).await? {
            SortedAnswer::Rank(rank) => Ok(rank),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `count` members with their scores from rank `start`, in order.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn range_by_rank(
        &self,
        start: u64,
        count: u64,
        descending: bool,
    ) -> Result<Vec<(String, i64)>, CacheError> {
        self.members_of(SortedOp::RangeByRank { start, count, descending }).await
    }

    /// Up to `limit` members with a score within `scores` (e.g. `100..`, `..=0`), lowest first or
    /// highest first.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn range_by_score(
        &self,
        scores: impl RangeBounds<i64>,
        descending: bool,
        limit: u64,
    ) -> Result<Vec<(String, i64)>, CacheError> {
        let (min, max) = (scores.start_bound().cloned(), scores.end_bound().cloned());
        self.members_of(SortedOp::RangeByScore { min, max, descending, limit }).await
    }

    /// How many members have a score within `scores`.
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn count(&self, scores: impl RangeBounds<i64>) -> Result<u64, CacheError> {
        let (min, max): (Bound<i64>, Bound<i64>) =
            (scores.start_bound().cloned(), scores.end_bound().cloned());
        self.count_of(SortedOp::Count { min, max }).await
    }

    /// How many members it has (0 when it is missing).
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn len(&self) -> Result<u64, CacheError> {
        self.count_of(SortedOp::Len).await
    }

    /// Whether it has no member (also when it is missing).
    ///
    /// # Errors
    /// `UNAVAILABLE`.
    pub async fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len().await? == 0)
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CacheError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| CacheError::Internal(format!("value does not serialize: {error}")))
}
