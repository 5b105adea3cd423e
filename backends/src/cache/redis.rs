//! The Redis cache (`cache.url = "redis://HOST:PORT[/DB]"`): shared by every node of the cluster,
//! under keys `mortar:CLUSTER:cache:MODULE:KEY`. Connection, reconnects and deadlines are the
//! ones of [`crate::redis_setup`]. `incr` is `INCRBY` (and `PEXPIRE` when it created the
//! counter); `set_if_absent` is `SET NX`.

use bytes::Bytes;
use mortar_abi::{
    cache::{CacheBackend, CacheError},
    future::BoxFuture,
};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use std::{sync::Arc, time::Duration};

/// A cache in a Redis server; cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisCache {
    /// Connects to `url` for cluster `cluster`, each command with the deadline `timeout`.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the server cannot be reached.
    pub async fn connect(url: &str, cluster: &str, timeout: Duration) -> Result<Self, CacheError> {
        let (_, conn) = crate::redis_setup::connect(url, timeout)
            .await
            .map_err(|reason| CacheError::Unavailable(format!("cache {url}: {reason}")))?;
        let shared =
            Shared { url: url.to_owned(), conn, prefix: format!("mortar:{cluster}:cache:"), timeout };
        Ok(Self { shared: Arc::new(shared) })
    }

    fn call<T: Send + 'static>(
        &self,
        command: impl FnOnce(ConnectionManager, String) -> BoxFuture<redis::RedisResult<T>>,
        key: String,
    ) -> BoxFuture<Result<T, CacheError>> {
        let shared = self.shared.clone();
        let run = command(shared.conn.clone(), format!("{}{key}", shared.prefix));
        Box::pin(async move {
            crate::redis_setup::run(shared.timeout, run).await.map_err(|reason| {
                if reason.contains("not an integer") || reason.contains("overflow") {
                    CacheError::Internal(format!("`{key}`: {reason}"))
                } else {
                    CacheError::Unavailable(format!("cache {}: {reason}", shared.url))
                }
            })
        })
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl CacheBackend for RedisCache {
    fn get(&self, key: String) -> BoxFuture<Result<Option<Bytes>, CacheError>> {
        self.call(
            |mut conn, key| {
                Box::pin(async move {
                    conn.get::<_, Option<Vec<u8>>>(key).await.map(|value| value.map(Bytes::from))
                })
            },
            key,
        )
    }

    fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> BoxFuture<Result<(), CacheError>> {
        self.call(
            move |mut conn, key| {
                Box::pin(async move {
                    let mut set = redis::cmd("SET");
                    set.arg(key).arg(value.as_ref());
                    if let Some(ttl) = ttl {
                        set.arg("PX").arg(millis(ttl));
                    }
                    set.query_async::<()>(&mut conn).await
                })
            },
            key,
        )
    }

    fn delete(&self, key: String) -> BoxFuture<Result<bool, CacheError>> {
        self.call(|mut conn, key| Box::pin(async move { conn.del::<_, i64>(key).await.map(|n| n > 0) }), key)
    }

    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> BoxFuture<Result<i64, CacheError>> {
        self.call(
            move |mut conn, key| {
                Box::pin(async move {
                    let n: i64 = conn.incr(&key, by).await?;
                    // The counter was created by this call when it holds exactly `by`.
                    if let Some(ttl) = ttl
                        && n == by
                    {
                        let _: bool =
                            conn.pexpire(&key, i64::try_from(millis(ttl)).unwrap_or(i64::MAX)).await?;
                    }
                    Ok(n)
                })
            },
            key,
        )
    }

    fn set_if_absent(
        &self,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<Result<bool, CacheError>> {
        self.call(
            move |mut conn, key| {
                Box::pin(async move {
                    let mut set = redis::cmd("SET");
                    set.arg(key).arg(value.as_ref()).arg("NX");
                    if let Some(ttl) = ttl {
                        set.arg("PX").arg(millis(ttl));
                    }
                    set.query_async::<Option<String>>(&mut conn).await.map(|answer| answer.is_some())
                })
            },
            key,
        )
    }
}
