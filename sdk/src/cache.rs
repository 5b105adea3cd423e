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

use crate::{Code, Failure, future::BoxFuture};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::{fmt, sync::Arc, time::Duration};

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
/// Redis); module code uses [`Cache`].
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

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CacheError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|error| CacheError::Internal(format!("value does not serialize: {error}")))
}
