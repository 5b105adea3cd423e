//! The cache's contract between the host and module code: [`CacheBackend`], what a backend
//! (memory, Redis) does, and its errors. Module code uses the SDK's `mortar::cache::Cache`.

use crate::{
    code::{Code, Failure},
    future::BoxFuture,
};
use bytes::Bytes;
use std::{fmt, time::Duration};

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
}
