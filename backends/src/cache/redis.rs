//! The Redis cache (`cache.url = "redis://HOST:PORT[/DB]"`): shared by every node of the cluster,
//! under keys `mortar:CLUSTER:cache:MODULE:KEY`. Connection, reconnects and deadlines are the
//! ones of [`crate::redis_setup`]. `incr` is `INCRBY` (and `PEXPIRE` when it created the
//! counter); `set_if_absent` is `SET NX`; sorted sets are ZSETs (`ZADD`, `ZINCRBY`, `ZRANK`,
//! `ZRANGE`, `ZRANGEBYSCORE`, `ZCOUNT`, … and their `REV` forms).

use bytes::Bytes;
use mortar_abi::{
    cache::{CacheBackend, CacheError, MAX_SCORE, SortedAnswer, SortedOp},
    future::BoxFuture,
};
use redis::{AsyncCommands as _, aio::ConnectionManager};
use std::{ops::Bound, sync::Arc, time::Duration};

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
                if reason.contains("not an integer")
                    || reason.contains("overflow")
                    || reason.contains("WRONGTYPE")
                    || reason.contains("does not know")
                {
                    CacheError::Internal(format!("`{key}`: {reason}"))
                } else {
                    CacheError::Unavailable(format!("cache {}: {reason}", shared.url))
                }
            })
        })
    }
}

/// A score bound as `ZRANGEBYSCORE` and `ZCOUNT` take it: `5`, `(5`, `-inf`, `+inf`.
fn score_bound(bound: Bound<i64>, unbounded: &str) -> String {
    match bound {
        Bound::Included(score) => score.to_string(),
        Bound::Excluded(score) => format!("({score}"),
        Bound::Unbounded => unbounded.to_owned(),
    }
}

/// A score Redis answered (a float): an integer within ±[`MAX_SCORE`], or an error.
fn score_of(score: f64) -> redis::RedisResult<i64> {
    if score.fract() == 0.0 && score.abs() <= MAX_SCORE as f64 {
        Ok(score as i64)
    } else {
        Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "not an integer score",
            score.to_string(),
        )))
    }
}

fn members(pairs: Vec<(String, f64)>) -> redis::RedisResult<SortedAnswer> {
    let members = pairs.into_iter().map(|(member, score)| Ok((member, score_of(score)?)));
    Ok(SortedAnswer::Members(members.collect::<redis::RedisResult<_>>()?))
}

/// Runs `op` on the ZSET `key`.
async fn sorted(mut conn: ConnectionManager, key: String, op: SortedOp) -> redis::RedisResult<SortedAnswer> {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match op {
        SortedOp::Add(entries) => {
            if entries.is_empty() {
                return Ok(SortedAnswer::Count(0));
            }
            let mut add = redis::cmd("ZADD");
            add.arg(&key);
            for (member, score) in &entries {
                add.arg(*score).arg(member);
            }
            add.query_async::<u64>(&mut conn).await.map(SortedAnswer::Count)
        }
        SortedOp::Incr { member, by } => {
            let score: f64 =
                redis::cmd("ZINCRBY").arg(&key).arg(by).arg(member).query_async(&mut conn).await?;
            Ok(SortedAnswer::Score(Some(score_of(score)?)))
        }
        SortedOp::Remove(members) => {
            if members.is_empty() {
                return Ok(SortedAnswer::Count(0));
            }
            redis::cmd("ZREM")
                .arg(&key)
                .arg(members)
                .query_async::<u64>(&mut conn)
                .await
                .map(SortedAnswer::Count)
        }
        SortedOp::Score(member) => {
            let score: Option<f64> =
                redis::cmd("ZSCORE").arg(&key).arg(member).query_async(&mut conn).await?;
            Ok(SortedAnswer::Score(score.map(score_of).transpose()?))
        }
        SortedOp::Rank { member, descending } => {
            let command = if descending { "ZREVRANK" } else { "ZRANK" };
            redis::cmd(command)
                .arg(&key)
                .arg(member)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .map(SortedAnswer::Rank)
        }
        SortedOp::RangeByRank { start, count, descending } => {
            if count == 0 {
                return Ok(SortedAnswer::Members(Vec::new()));
            }
            let command = if descending { "ZREVRANGE" } else { "ZRANGE" };
            let stop = signed(start.saturating_add(count - 1));
            let pairs = redis::cmd(command)
                .arg(&key)
                .arg(signed(start))
                .arg(stop)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            members(pairs)
        }
        SortedOp::RangeByScore { min, max, descending, limit } => {
            let (min, max) = (score_bound(min, "-inf"), score_bound(max, "+inf"));
            let mut range = redis::cmd(if descending { "ZREVRANGEBYSCORE" } else { "ZRANGEBYSCORE" });
            range.arg(&key);
            if descending {
                range.arg(max).arg(min)
            } else {
                range.arg(min).arg(max)
            };
            let pairs =
                range.arg("WITHSCORES").arg("LIMIT").arg(0).arg(signed(limit)).query_async(&mut conn).await?;
            members(pairs)
        }
        SortedOp::Count { min, max } => redis::cmd("ZCOUNT")
            .arg(&key)
            .arg(score_bound(min, "-inf"))
            .arg(score_bound(max, "+inf"))
            .query_async::<u64>(&mut conn)
            .await
            .map(SortedAnswer::Count),
        SortedOp::Len => {
            redis::cmd("ZCARD").arg(&key).query_async::<u64>(&mut conn).await.map(SortedAnswer::Count)
        }
        _ => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "a sorted-set operation this cache does not know",
        ))),
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

    fn sorted(&self, key: String, op: SortedOp) -> BoxFuture<Result<SortedAnswer, CacheError>> {
        self.call(move |conn, key| Box::pin(sorted(conn, key, op)), key)
    }
}
