//! Document storage for modules: the backends behind `Ctx::store`.
//!
//! Layout:
//! - this file: [`open`] (the backend `storage.url` names, wrapped in [`Instrumented`]),
//!   [`NoStore`], and the retry pause the SDK's update loop uses.
//! - [`embedded`]: the default, a redb file in `storage.path`, group-committed.
//! - [`mongo`]: MongoDB (`storage.url = "mongodb://…"`), shared by a cluster's workers.
//!
//! The model (versions, compare-and-set, retries, no cross-document transactions) is the SDK's,
//! described in `mortar::store` and docs/storage.md.

pub mod embedded;
pub mod mongo;

use crate::config::StorageConfig;
use futures::FutureExt as _;
use mortar_abi::{
    future::BoxFuture,
    store::{Collection, Fields, RawDoc, Scan, StoreBackend, StoreError},
};
use mortar_telemetry::metrics as m;
use std::{sync::Arc, time::Duration, time::Instant};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The embedded store's directory or file.
    #[error(transparent)]
    Embedded(#[from] embedded::OpenError),
    /// The MongoDB server cannot be reached, or the URI is unusable.
    #[error("storage.url {url}: {reason}")]
    Mongo {
        /// The URI, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// `storage.url` names no backend.
    #[error("storage.url `{0}`: must be `embedded` or a mongodb:// URI")]
    BadUrl(String),
}

/// Opens the store `config.url` names.
///
/// # Errors
/// See [`StorageError`].
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn StoreBackend>, StorageError> {
    Ok(open_watched(config).await?.0)
}

/// Opens the store `config.url` names, with whether it can write now (see
/// [`embedded::EmbeddedStore::writable`]; always true for MongoDB, whose failures are per call).
///
/// # Errors
/// See [`StorageError`].
pub async fn open_watched(
    config: &StorageConfig,
) -> Result<(Arc<dyn StoreBackend>, Arc<std::sync::atomic::AtomicBool>), StorageError> {
    let url = config.url.as_str();
    if url == "embedded" {
        let store = embedded::EmbeddedStore::open(&config.path)?;
        let writable = store.writable();
        return Ok((Arc::new(Instrumented::new("embedded", store)), writable));
    }
    let always = Arc::new(std::sync::atomic::AtomicBool::new(true));
    Ok((open_remote(config).await?, always))
}

async fn open_remote(config: &StorageConfig) -> Result<Arc<dyn StoreBackend>, StorageError> {
    let url = config.url.as_str();
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let store = mongo::MongoStore::connect(url, config.timeout())
            .await
            .map_err(|reason| StorageError::Mongo { url: redact(url), reason })?;
        return Ok(Arc::new(Instrumented::new("mongodb", store)));
    }
    Err(StorageError::BadUrl(redact(url)))
}

/// Where a worker keeps its modules' documents, as it registers it: workers with different
/// identities see different documents. `embedded@NODE` for the embedded store (each node has its
/// own); for MongoDB the URI's hosts and database, without user, password or options.
pub fn identity(config: &StorageConfig, node: &str) -> String {
    let url = config.url.as_str();
    if url == "embedded" {
        return format!("embedded@{node}");
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    format!("{scheme}://{rest}")
}

/// `url` without the password of its user, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if scheme < at => {
            let user = &url[scheme + 3..at];
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The pause before retry `attempt` of a conflicting update: 1, 2, 4… ms up to 64 ms, plus up to
/// as much again at random, so racing writers spread out.
pub fn backoff(attempt: u32) -> BoxFuture<()> {
    let base = Duration::from_millis(1 << attempt.saturating_sub(1).min(6));
    Box::pin(tokio::time::sleep(crate::jitter::jitter(base, 1.0)))
}

/// The store of a node that has none: every operation is `UNAVAILABLE`.
pub struct NoStore;

impl NoStore {
    fn refuse<T: Send + 'static>() -> BoxFuture<Result<T, StoreError>> {
        Box::pin(std::future::ready(Err(StoreError::Unavailable("this node has no store".into()))))
    }
}

impl StoreBackend for NoStore {
    fn get(&self, _: Collection, _: u64) -> BoxFuture<Result<Option<RawDoc>, StoreError>> {
        Self::refuse()
    }
    fn insert(&self, _: Collection, _: u64, _: Fields) -> BoxFuture<Result<u64, StoreError>> {
        Self::refuse()
    }
    fn replace(&self, _: Collection, _: u64, _: u64, _: Fields) -> BoxFuture<Result<u64, StoreError>> {
        Self::refuse()
    }
    fn delete(&self, _: Collection, _: u64) -> BoxFuture<Result<bool, StoreError>> {
        Self::refuse()
    }
    fn find(
        &self,
        _: Collection,
        _: &'static str,
        _: serde_json::Value,
        _: usize,
    ) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        Self::refuse()
    }
    fn count(
        &self,
        _: Collection,
        _: Option<(&'static str, serde_json::Value)>,
    ) -> BoxFuture<Result<u64, StoreError>> {
        Self::refuse()
    }
    fn scan(&self, _: Collection, _: Scan) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        Self::refuse()
    }
    fn count_scan(&self, _: Collection, _: Scan) -> BoxFuture<Result<u64, StoreError>> {
        Self::refuse()
    }
    fn get_many(&self, _: Collection, _: Vec<u64>) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        Self::refuse()
    }
    fn backoff(&self, attempt: u32) -> BoxFuture<()> {
        backoff(attempt)
    }
}

/// A backend with its latency and errors recorded by operation: `mortar_store_duration_seconds`
/// and `mortar_store_errors_total` with labels `backend`, `op` (and `error`). Internal errors are
/// logged here with their detail, which the client never sees.
pub struct Instrumented<B> {
    backend: &'static str,
    inner: B,
}

impl<B: StoreBackend> Instrumented<B> {
    /// `inner`, recorded as `backend`.
    pub fn new(backend: &'static str, inner: B) -> Self {
        Self { backend, inner }
    }

    fn observe<T: Send + 'static>(
        &self,
        op: &'static str,
        collection: Collection,
        call: BoxFuture<Result<T, StoreError>>,
    ) -> BoxFuture<Result<T, StoreError>> {
        let backend = self.backend;
        let started = Instant::now();
        call.map(move |result| {
            metrics::histogram!(m::STORE_DURATION, "backend" => backend, "op" => op).record(started.elapsed());
            if let Err(error) = &result {
                let kind = match error {
                    StoreError::NotFound => "not_found",
                    StoreError::AlreadyExists { .. } => "already_exists",
                    StoreError::Conflict => "conflict",
                    StoreError::Invalid(_) => "invalid",
                    StoreError::Unavailable(_) => "unavailable",
                    _ => "internal",
                };
                metrics::counter!(m::STORE_ERRORS, "backend" => backend, "op" => op, "error" => kind).increment(1);
                if matches!(error, StoreError::Unavailable(_) | StoreError::Internal(_)) {
                    tracing::error!(backend, op, collection = collection.name, %error, "store operation failed");
                }
            }
            result
        })
        .boxed()
    }
}

impl<B: StoreBackend> StoreBackend for Instrumented<B> {
    fn failed(&self, collection: Collection, error: &StoreError) {
        let backend = self.backend;
        metrics::counter!(m::STORE_ERRORS, "backend" => backend, "op" => "codec", "error" => "internal")
            .increment(1);
        tracing::error!(backend, collection = collection.name, %error, "a module's document does not fit its type");
    }

    fn get(&self, collection: Collection, id: u64) -> BoxFuture<Result<Option<RawDoc>, StoreError>> {
        self.observe("get", collection, self.inner.get(collection, id))
    }
    fn insert(&self, collection: Collection, id: u64, fields: Fields) -> BoxFuture<Result<u64, StoreError>> {
        self.observe("insert", collection, self.inner.insert(collection, id, fields))
    }
    fn replace(
        &self,
        collection: Collection,
        id: u64,
        expected: u64,
        fields: Fields,
    ) -> BoxFuture<Result<u64, StoreError>> {
        self.observe("replace", collection, self.inner.replace(collection, id, expected, fields))
    }
    fn delete(&self, collection: Collection, id: u64) -> BoxFuture<Result<bool, StoreError>> {
        self.observe("delete", collection, self.inner.delete(collection, id))
    }
    fn find(
        &self,
        collection: Collection,
        field: &'static str,
        value: serde_json::Value,
        limit: usize,
    ) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        self.observe("find", collection, self.inner.find(collection, field, value, limit))
    }
    fn count(
        &self,
        collection: Collection,
        filter: Option<(&'static str, serde_json::Value)>,
    ) -> BoxFuture<Result<u64, StoreError>> {
        self.observe("count", collection, self.inner.count(collection, filter))
    }
    fn scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        self.observe("scan", collection, self.inner.scan(collection, scan))
    }
    fn count_scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<u64, StoreError>> {
        self.observe("count_scan", collection, self.inner.count_scan(collection, scan))
    }
    fn get_many(&self, collection: Collection, ids: Vec<u64>) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        self.observe("get_many", collection, self.inner.get_many(collection, ids))
    }
    fn backoff(&self, attempt: u32) -> BoxFuture<()> {
        self.inner.backoff(attempt)
    }
}

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(test)]
mod tests {
    use crate::config::StorageConfig;

    #[test]
    fn identities_differ_per_embedded_node_and_ignore_mongodb_credentials() {
        let embedded = StorageConfig::default();
        assert_ne!(super::identity(&embedded, "w1"), super::identity(&embedded, "w2"));
        let with = StorageConfig {
            url: "mongodb://ana:pw@db1:27017,db2:27017/game?tls=true".into(),
            ..embedded.clone()
        };
        let without = StorageConfig { url: "mongodb://db1:27017,db2:27017/game".into(), ..embedded };
        assert_eq!(super::identity(&with, "w1"), "mongodb://db1:27017,db2:27017/game");
        assert_eq!(super::identity(&with, "w1"), super::identity(&without, "w2"));
    }
}
