//! The cache behind `Ctx::cache`: short-lived values, counters and locks.
//!
//! Layout:
//! - this file: [`open`] (the backend `cache.url` names, its operations timed and counted).
//! - [`memory`]: in this process, bounded, with per-entry TTLs (moka); the default.
//! - [`redis`]: a Redis server (`cache.url = "redis://…"`), shared by every node of a cluster.

pub mod memory;
mod ranked;
pub mod redis;

use crate::config::CacheConfig;
use bytes::Bytes;
use futures::FutureExt as _;
use mortar_abi::{
    cache::{CacheBackend, CacheError, SortedAnswer, SortedOp},
    future::BoxFuture,
};
use mortar_telemetry::metrics as m;
use std::{sync::Arc, time::Duration, time::Instant};

/// Opens the cache `cache.url` names, for the cluster named `cluster` (its keys' prefix).
///
/// # Errors
/// A Redis server that cannot be reached at start, as text.
pub async fn open(cache: &CacheConfig, cluster: &str) -> Result<Arc<dyn CacheBackend>, CacheError> {
    if cache.url == "memory" {
        return Ok(Arc::new(Instrumented("memory", memory::MemoryCache::new(cache.max_entries))));
    }
    let redis = redis::RedisCache::connect(&cache.url, cluster, cache.timeout()).await?;
    Ok(Arc::new(Instrumented("redis", redis)))
}

/// A backend with `mortar_cache_duration_seconds{backend,op}` and
/// `mortar_cache_errors_total{backend,op}` recorded, and failures logged.
struct Instrumented<B>(&'static str, B);

impl<B: CacheBackend> Instrumented<B> {
    fn observe<T: Send + 'static>(
        &self,
        op: &'static str,
        call: BoxFuture<Result<T, CacheError>>,
    ) -> BoxFuture<Result<T, CacheError>> {
        let (backend, started) = (self.0, Instant::now());
        call.map(move |result| {
            metrics::histogram!(m::CACHE_DURATION, "backend" => backend, "op" => op)
                .record(started.elapsed());
            if let Err(error) = &result {
                metrics::counter!(m::CACHE_ERRORS, "backend" => backend, "op" => op).increment(1);
                tracing::warn!(backend, op, %error, "cache operation failed");
            }
            result
        })
        .boxed()
    }
}

impl<B: CacheBackend> CacheBackend for Instrumented<B> {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Bytes>, CacheError>> {
        self.observe("get", self.1.get(key))
    }
    fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> BoxFuture<Result<(), CacheError>> {
        self.observe("set", self.1.set(key, value, ttl))
    }
    fn delete(&self, key: String) -> BoxFuture<Result<bool, CacheError>> {
        self.observe("delete", self.1.delete(key))
    }
    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> BoxFuture<Result<i64, CacheError>> {
        self.observe("incr", self.1.incr(key, by, ttl))
    }
    fn set_if_absent(
        &self,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<Result<bool, CacheError>> {
        self.observe("set_if_absent", self.1.set_if_absent(key, value, ttl))
    }
    fn sorted(&self, key: String, op: SortedOp) -> BoxFuture<Result<SortedAnswer, CacheError>> {
        self.observe("sorted", self.1.sorted(key, op))
    }
}

#[cfg(feature = "conformance")]
pub mod conformance;
