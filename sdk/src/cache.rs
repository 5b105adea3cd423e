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

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::{sync::Arc, time::Duration};

pub use mortar_abi::cache::{CacheBackend, CacheError};

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
