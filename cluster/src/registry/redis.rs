//! The Redis registry (`registry.url = "redis://HOST:PORT[/DB]"`).
//!
//! Each node's entry is a JSON value under `mortar:CLUSTER:node:ID` with a TTL
//! (`registry.ttl_ms`) that its heartbeat refreshes. Registering or leaving publishes the node id
//! on `mortar:CLUSTER:nodes`; every node follows that channel and reads the full list again on
//! each notice, and every `registry.resync_ms` anyway, so a missed notice or an expired entry
//! (a dead or frozen node) heals at the next resync.
//!
//! The follower task ends when the registry is dropped. While it runs:
//! 1. a notice on the channel, or the resync timer, reads the list again (SCAN + MGET);
//! 2. when Redis cannot be reached, the last list stays in force (logged once) and the
//!    subscription is retried with backoff;
//! 3. when Redis is back, the list is read again; each node's heartbeat finds its entry gone and
//!    registers it again, so a restarted Redis is refilled within one heartbeat.

use super::{Membership, NodeEntry, Nodes, Registry, RegistryError, Watcher};
use crate::config::RegistryConfig;
use futures::{
    StreamExt as _,
    future::{BoxFuture, FutureExt as _},
};
use mortar_telemetry::metrics as m;
use redis::{AsyncCommands as _, aio::ConnectionManager};
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A registry kept in Redis.
pub struct RedisRegistry {
    shared: Arc<Shared>,
    _follower: DropGuard,
}

struct Shared {
    url: String,
    client: redis::Client,
    conn: ConnectionManager,
    /// `mortar:CLUSTER:node:`; an entry's key is this plus the node id.
    prefix: String,
    /// `mortar:CLUSTER:nodes`, where changes are announced.
    channel: String,
    ttl: Duration,
    timeout: Duration,
    resync: Duration,
    membership: Membership,
    /// Whether the last command reached Redis, so an outage is logged once, not per command.
    reachable: AtomicBool,
    resync_now: Notify,
}

impl RedisRegistry {
    /// Connects to the Redis server of `config.url` and reads the node list of `cluster`.
    ///
    /// # Errors
    /// When the URL does not parse or the server does not answer within `registry.timeout_ms`.
    pub async fn connect(config: &RegistryConfig, cluster: &str) -> Result<Self, RegistryError> {
        let url = config.url.clone();
        let (client, conn) = mortar_backends::redis_setup::connect(&url, config.timeout())
            .await
            .map_err(|reason| RegistryError::Unavailable { url: url.clone(), reason })?;
        let shared = Arc::new(Shared {
            url: url.clone(),
            client,
            conn,
            prefix: format!("mortar:{cluster}:node:"),
            channel: format!("mortar:{cluster}:nodes"),
            ttl: config.ttl(),
            timeout: config.timeout(),
            resync: config.resync(),
            membership: Membership::default(),
            reachable: AtomicBool::new(true),
            resync_now: Notify::new(),
        });
        shared.resync().await?;
        let stop = CancellationToken::new();
        tokio::spawn(follow(shared.clone(), stop.clone()));
        Ok(Self { shared, _follower: stop.drop_guard() })
    }
}

impl Shared {
    /// Runs one Redis command future with the registry's deadline; records reachability.
    async fn run<T>(
        &self,
        what: &str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RegistryError> {
        match mortar_backends::redis_setup::run(self.timeout, command).await {
            Ok(value) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(url = %self.url, "registry reachable again");
                }
                Ok(value)
            }
            Err(reason) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(url = %self.url, %reason, command = what, nodes = self.membership.get().len(), "registry unreachable: serving from the last node list");
                }
                metrics::counter!(m::REGISTRY_ERRORS).increment(1);
                Err(RegistryError::Unavailable { url: self.url.clone(), reason })
            }
        }
    }

    /// Reads every entry of the cluster and makes it the node list.
    async fn resync(&self) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let scan =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).to_owned();
            let (next, batch): (u64, Vec<String>) = self.run("SCAN", scan.query_async(&mut conn)).await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut nodes = Nodes::new();
        if !keys.is_empty() {
            let values: Vec<Option<String>> = self.run("MGET", conn.mget(&keys)).await?;
            for (key, value) in keys.iter().zip(values) {
                let Some(value) = value else { continue }; // expired between SCAN and MGET
                match serde_json::from_str::<NodeEntry>(&value) {
                    Ok(entry) if key.strip_prefix(&self.prefix) == Some(entry.id.as_str()) => {
                        nodes.insert(entry.id.clone(), entry);
                    }
                    Ok(entry) => {
                        tracing::warn!(%key, id = %entry.id, "registry entry's id does not match its key: ignored")
                    }
                    Err(error) => tracing::warn!(%key, %error, "registry entry does not parse: ignored"),
                }
            }
        }
        self.membership.replace(nodes);
        Ok(())
    }

    async fn set(&self, entry: &NodeEntry) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let key = format!("{}{}", self.prefix, entry.id);
        let value = serde_json::to_string(entry).map_err(|error| RegistryError::Unavailable {
            url: self.url.clone(),
            reason: error.to_string(),
        })?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let set = redis::cmd("SET").arg(&key).arg(value).arg("PX").arg(ttl_ms).to_owned();
        self.run::<()>("SET", set.query_async(&mut conn)).await?;
        self.run::<i64>("PUBLISH", conn.publish(&self.channel, &entry.id)).await?;
        Ok(())
    }
}

impl Registry for RedisRegistry {
    fn register(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        let entry = entry.clone();
        async move { self.shared.set(&entry).await }.boxed()
    }

    fn deregister(&self, id: &str) -> BoxFuture<'_, Result<(), RegistryError>> {
        let id = id.to_owned();
        async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            let key = format!("{}{id}", shared.prefix);
            shared.run::<i64>("DEL", conn.del(&key)).await?;
            shared.run::<i64>("PUBLISH", conn.publish(&shared.channel, &id)).await?;
            Ok(())
        }
        .boxed()
    }

    fn heartbeat(&self, entry: &NodeEntry) -> BoxFuture<'_, Result<(), RegistryError>> {
        let entry = entry.clone();
        async move {
            let shared = &self.shared;
            let mut conn = shared.conn.clone();
            let key = format!("{}{}", shared.prefix, entry.id);
            let ttl_ms = i64::try_from(shared.ttl.as_millis()).unwrap_or(i64::MAX);
            let refreshed: bool = shared.run("PEXPIRE", conn.pexpire(&key, ttl_ms)).await?;
            if !refreshed {
                // Expired (the node was frozen) or lost (Redis restarted): register again.
                tracing::info!(node = %entry.id, url = %shared.url, "registry entry was gone: registering again");
                shared.set(&entry).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn snapshot(&self) -> Nodes {
        self.shared.membership.get()
    }

    fn watch(&self) -> Watcher {
        self.shared.membership.watch()
    }
}

/// Follows the change channel and resyncs (see the module docs) until `stop`.
async fn follow(shared: Arc<Shared>, stop: CancellationToken) {
    let notices = {
        let shared = shared.clone();
        async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match subscribe(&shared).await {
                    Ok(mut stream) => {
                        backoff = Duration::from_millis(100);
                        // Notices may have been missed while unsubscribed.
                        shared.resync_now.notify_one();
                        while stream.next().await.is_some() {
                            shared.resync_now.notify_one();
                        }
                        tracing::debug!(url = %shared.url, "registry subscription ended");
                    }
                    Err(error) => {
                        tracing::debug!(url = %shared.url, %error, "cannot subscribe to registry notices")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    let resyncs = async {
        let mut timer = tokio::time::interval(shared.resync);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                () = shared.resync_now.notified() => {}
            }
            // Failures are logged by `run`; the last list stays in force.
            let _ = shared.resync().await;
            metrics::gauge!(m::REGISTRY_UP).set(if shared.reachable.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            });
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = notices => {}
        () = resyncs => {}
    }
}

async fn subscribe(shared: &Shared) -> Result<redis::aio::PubSubStream, String> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&shared.channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    match tokio::time::timeout(shared.timeout, connect).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(_) => Err("no answer".into()),
    }
}
