//! The cache's contract between the host and module code: [`CacheBackend`], what a backend
//! (memory, Redis) does, and its errors. Module code uses the SDK's `mortar::cache::Cache`.

use crate::{
    code::{Code, Failure},
    future::BoxFuture,
};
use bytes::Bytes;
use std::{fmt, ops::Bound, time::Duration};

/// Why a cache operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend cannot be reached.
    Unavailable(String),
    /// The value is not what the operation needs (not an integer for `incr`, not the JSON of the
    /// type asked for), or another failure; logged by the host.
    Internal(String),
}

impl CacheError {
    /// The code a client gets for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::Unavailable(_) => Code::UNAVAILABLE,
            Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "cache unavailable: {why}"),
            Self::Internal(why) => write!(f, "cache error: {why}"),
        }
    }
}

impl std::error::Error for CacheError {}

impl From<CacheError> for Code {
    fn from(error: CacheError) -> Self {
        error.code()
    }
}

/// The error's code, without a reason: a cache error's detail is for the host's log, not for the
/// client.
impl From<CacheError> for Failure {
    fn from(error: CacheError) -> Self {
        error.code().into()
    }
}

/// What a host's cache does, on raw keys and bytes. Implemented by the host's backends (memory,
/// Redis); module code uses the SDK's `Cache`.
pub trait CacheBackend: Send + Sync + 'static {
    /// The value of `key`, if set and not expired.
    fn get(&self, key: String) -> BoxFuture<Result<Option<Bytes>, CacheError>>;
    /// Sets `key` to `value`, expiring after `ttl` (never without one).
    fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> BoxFuture<Result<(), CacheError>>;
    /// Removes `key`; whether it was set.
    fn delete(&self, key: String) -> BoxFuture<Result<bool, CacheError>>;
    /// Adds `by` to the integer at `key` (a missing key counts as 0, and then gets `ttl`); the
    /// new value. Atomic.
    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> BoxFuture<Result<i64, CacheError>>;
    /// Sets `key` only if it is not set; whether it was set now. Atomic: usable as a short lock.
    fn set_if_absent(
        &self,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<Result<bool, CacheError>>;
    /// Runs `op` on the sorted set at `key` (see [`SortedOp`]); a missing set is empty.
    fn sorted(&self, key: String, op: SortedOp) -> BoxFuture<Result<SortedAnswer, CacheError>>;
}

/// The largest score a sorted set keeps exactly, in either sign: Redis keeps scores as 64-bit
/// floats, exact for integers up to 2^53 − 1.
pub const MAX_SCORE: i64 = (1 << 53) - 1;

/// One operation on a sorted set: members (strings) each with an integer score, ordered by
/// score, equal scores by member (their bytes), the whole order reversed when `descending`,
/// as Redis orders its sorted sets. Ranks are 0-based.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SortedOp {
    /// Sets each member's score, adding those missing: [`SortedAnswer::Count`] of added ones.
    Add(Vec<(String, i64)>),
    /// Adds `by` to the member's score (a missing member starts at 0): [`SortedAnswer::Score`].
    Incr {
        /// The member.
        member: String,
        /// What to add.
        by: i64,
    },
    /// Removes the members: [`SortedAnswer::Count`] of removed ones.
    Remove(Vec<String>),
    /// The member's score: [`SortedAnswer::Score`].
    Score(String),
    /// The member's rank: [`SortedAnswer::Rank`].
    Rank {
        /// The member.
        member: String,
        /// Ranked from the highest score.
        descending: bool,
    },
    /// Up to `count` members from rank `start`: [`SortedAnswer::Members`].
    RangeByRank {
        /// The first rank.
        start: u64,
        /// At most this many.
        count: u64,
        /// Ranked from the highest score.
        descending: bool,
    },
    /// Up to `limit` members with a score within `min`..`max`, lowest first (highest first when
    /// `descending`): [`SortedAnswer::Members`].
    RangeByScore {
        /// The lowest score.
        min: Bound<i64>,
        /// The highest score.
        max: Bound<i64>,
        /// Highest first.
        descending: bool,
        /// At most this many.
        limit: u64,
    },
    /// How many members have a score within `min`..`max`: [`SortedAnswer::Count`].
    Count {
        /// The lowest score.
        min: Bound<i64>,
        /// The highest score.
        max: Bound<i64>,
    },
    /// How many members it has: [`SortedAnswer::Count`].
    Len,
}

/// What a [`SortedOp`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SortedAnswer {
    /// A number of members.
    Count(u64),
    /// A score; none for a missing member.
    Score(Option<i64>),
    /// A 0-based rank; none for a missing member.
    Rank(Option<u64>),
    /// Members with their scores, in order.
    Members(Vec<(String, i64)>),
}
