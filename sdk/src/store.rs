//! Documents: the typed, versioned records a module keeps, through the host's store.
//!
//! A module declares a document type once and reaches its collection through
//! [`Ctx::store`](crate::Ctx::store); it never sees a driver:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default, mortar::Document)]
//! #[document(collection = "account", index(unique = "name"), index(lookup = "guild"))]
//! struct Account { name: String, guild: u64, coins: u64 }
//!
//! use mortar::store::{Document as _, Index};
//! assert_eq!(Account::COLLECTION, "account");
//! assert_eq!(Account::INDEXES, [Index::unique("name"), Index::lookup("guild")]);
//! ```
//!
//! (or by hand: `impl Document for Account { const COLLECTION … ; const INDEXES … }`).
//!
//! An index names a Rust field and is on the name serde stores it under:
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # use mortar::store::{Document as _, Index};
//! #[derive(Serialize, Deserialize, Default, mortar::Document)]
//! #[serde(rename_all = "camelCase")]
//! #[document(collection = "guild", index(unique = "guild_name"), index(lookup = "leader"))]
//! struct Guild { guild_name: String, #[serde(rename = "chief")] leader: u64 }
//!
//! assert_eq!(Guild::INDEXES, [Index::unique("guildName"), Index::lookup("chief")]);
//! ```
//!
//! Every document has a `u64` id (at most `i64::MAX`, which every backend can store) and a
//! version that each write raises by one. A write names the version it read ([`Store::save`]):
//! when another write came first it is refused with `CONFLICT`, so no update is ever lost
//! silently. [`Store::update`] does the read-modify-write loop for you, retrying for up to
//! [`UPDATE_PATIENCE`]. There are no transactions across documents: make multi-document changes idempotent
//! (e.g. grants keyed by an id, see docs/storage.md).
//!
//! A sorted index ([`SortedIndex`], `sorted(name = …, fields(…))` in the derive) keeps documents
//! in the order of its fields, then of their ids: [`Store::sorted`] reads ranges of it in pages,
//! with a [`Cursor`] to the next, and counts them (docs/storage.md has the rules).
//!
//! Layout: [`Document`], [`Index`] and [`SortedIndex`] (the declaration), [`Store`] (the typed
//! handle), [`Query`], [`Page`] and [`Cursor`] (sorted reads), [`StoreBackend`] (what a host
//! implements), [`StoreError`] (and its wire codes).

use crate::{Code, Failure};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    fmt,
    marker::PhantomData,
    ops::{Bound, RangeBounds},
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

pub use mortar_abi::store::{
    Collection, Document, DocumentDecl, Fields, Index, MAX_ID, Position, RawDoc, Scan, SortedIndex,
    StoreBackend, StoreError, declared, registered, stable_id,
};

/// A stored document with its id and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The document's id.
    pub id: u64,
    /// Raised by one on every write; 1 after the insert.
    pub version: u64,
    /// The document.
    pub doc: T,
}

/// How long [`Store::update`] keeps trying while other writes of the same document come first,
/// before it gives up with `CONFLICT`. Each try it loses is a write that won, so N requests racing
/// on one document all get through; the patience bounds only a write that keeps losing under a
/// stream of others (the request's deadline bounds it too). A fixed number of tries did not: 50
/// racing increments on a loaded machine, each commit waiting for the disk, outlasted 10 tries.
pub const UPDATE_PATIENCE: Duration = Duration::from_secs(5);

/// The typed handle on the collection of `T`. Cheap to clone.
pub struct Store<T> {
    backend: Arc<dyn StoreBackend>,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self { backend: self.backend.clone(), _doc: PhantomData }
    }
}

impl<T: Document> Store<T> {
    /// The collection of `T` in `backend`. Modules get theirs from
    /// [`Ctx::store`](crate::Ctx::store).
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        Self { backend, _doc: PhantomData }
    }

    /// The backend it reads and writes.
    pub fn backend(&self) -> Arc<dyn StoreBackend> {
        self.backend.clone()
    }

    /// Tells the backend about an error made on this side, and returns it.
    fn failed(&self, error: StoreError) -> StoreError {
        self.backend.failed(Collection::of::<T>(), &error);
        error
    }

    /// Document `id`.
    ///
    /// # Errors
    /// `NOT_FOUND` when there is none; `UNAVAILABLE`, `INTERNAL`.
    pub async fn get(&self, id: u64) -> Result<Versioned<T>, StoreError> {
        self.try_get(id).await?.ok_or(StoreError::NotFound)
    }

    /// Document `id`, or `None`.
    ///
    /// # Errors
    /// `UNAVAILABLE`, `INTERNAL` (also when the stored fields no longer fit `T`).
    pub async fn try_get(&self, id: u64) -> Result<Option<Versioned<T>>, StoreError> {
        if id > MAX_ID {
            return Ok(None); // no document can have it (a client's id out of range)
        }
        let found = self.backend.get(Collection::of::<T>(), id).await?;
        found.map(decode).transpose().map_err(|error| self.failed(error))
    }

    /// Creates document `id` (version 1).
    ///
    /// # Errors
    /// `ALREADY_EXISTS` when the id or a unique field's value is taken; `UNAVAILABLE`, `INTERNAL`.
    pub async fn insert(&self, id: u64, doc: T) -> Result<Versioned<T>, StoreError> {
        let fields = encode::<T>(&doc).map_err(|error| self.failed(error))?;
        let id = check_id(id).map_err(|error| self.failed(error))?;
        let version = self.backend.insert(Collection::of::<T>(), id, fields).await?;
        Ok(Versioned { id, version, doc })
    }

    /// Writes `doc` back if nobody wrote it since it was read; returns it with its new version.
    ///
    /// # Errors
    /// `CONFLICT` when another write came first; `NOT_FOUND` when it was deleted;
    /// `ALREADY_EXISTS` when a unique field's new value is taken; `UNAVAILABLE`, `INTERNAL`.
    pub async fn save(&self, doc: Versioned<T>) -> Result<Versioned<T>, StoreError> {
        let fields = encode::<T>(&doc.doc).map_err(|error| self.failed(error))?;
        let version = self
            .backend
            .replace(
                Collection::of::<T>(),
                check_id(doc.id).map_err(|error| self.failed(error))?,
                doc.version,
                fields,
            )
            .await?;
        Ok(Versioned { version, ..doc })
    }

    /// Reads document `id`, lets `change` modify it, and saves it; on a conflict reads again and
    /// calls `change` again (with a growing pause, for up to [`UPDATE_PATIENCE`]). `change`
    /// may refuse with any code, which is returned and nothing is written. Returns the saved
    /// document and what `change` returned the last time.
    ///
    /// # Errors
    /// `NOT_FOUND` when there is no such document; `change`'s code; `CONFLICT` after the last
    /// attempt; `UNAVAILABLE`, `INTERNAL`.
    pub async fn update<R>(
        &self,
        id: u64,
        mut change: impl FnMut(&mut T) -> Result<R, Code>,
    ) -> Result<(Versioned<T>, R), UpdateError> {
        let (started, mut attempt) = (Instant::now(), 0);
        loop {
            attempt += 1;
            let mut current = self.get(id).await?;
            let out = change(&mut current.doc).map_err(UpdateError::Refused)?;
            match self.save(current).await {
                Ok(saved) => return Ok((saved, out)),
                Err(StoreError::Conflict) if started.elapsed() < UPDATE_PATIENCE => {
                    self.backend.backoff(attempt).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Like [`Store::update`], but a missing document starts as `T::default()` and is inserted.
    ///
    /// # Errors
    /// As [`Store::update`] (a racing insert of the same id is retried, not an error).
    pub async fn upsert<R>(
        &self,
        id: u64,
        mut change: impl FnMut(&mut T) -> Result<R, Code>,
    ) -> Result<(Versioned<T>, R), UpdateError>
    where
        T: Default,
    {
        let (started, mut attempt) = (Instant::now(), 0);
        loop {
            attempt += 1;
            let written = match self.try_get(id).await? {
                Some(mut current) => {
                    let out = change(&mut current.doc).map_err(UpdateError::Refused)?;
                    self.save(current).await.map(|saved| (saved, out))
                }
                None => {
                    let mut doc = T::default();
                    let out = change(&mut doc).map_err(UpdateError::Refused)?;
                    match self.insert(id, doc).await {
                        // Someone else created it first: read theirs and apply the change to it.
                        Err(StoreError::AlreadyExists { index: None }) => Err(StoreError::Conflict),
                        other => other.map(|saved| (saved, out)),
                    }
                }
            };
            match written {
                Ok(done) => return Ok(done),
                Err(StoreError::Conflict) if started.elapsed() < UPDATE_PATIENCE => {
                    self.backend.backoff(attempt).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Deletes document `id`; whether it existed.
    ///
    /// # Errors
    /// `UNAVAILABLE`, `INTERNAL`.
    pub async fn delete(&self, id: u64) -> Result<bool, StoreError> {
        if id > MAX_ID {
            return Ok(false);
        }
        self.backend.delete(Collection::of::<T>(), id).await
    }

    /// Up to `limit` documents whose indexed `field` equals `value`, by ascending id.
    ///
    /// # Errors
    /// `INTERNAL` when `field` is not one of `T::INDEXES`; `UNAVAILABLE`.
    pub async fn find(
        &self,
        field: &'static str,
        value: impl Serialize,
        limit: usize,
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        let value = indexed_value::<T>(field, value)?;
        let found = self.backend.find(Collection::of::<T>(), field, value, limit).await?;
        found.into_iter().map(decode).collect::<Result<_, _>>().map_err(|error| self.failed(error))
    }

    /// The document whose unique `field` equals `value`, if any.
    ///
    /// # Errors
    /// As [`Store::find`].
    pub async fn find_one(
        &self,
        field: &'static str,
        value: impl Serialize,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        Ok(self.find(field, value, 1).await?.into_iter().next())
    }

    /// How many documents the collection has.
    ///
    /// # Errors
    /// `UNAVAILABLE`, `INTERNAL`.
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.backend.count(Collection::of::<T>(), None).await
    }

    /// How many documents have the indexed `field` equal to `value`.
    ///
    /// # Errors
    /// As [`Store::find`].
    pub async fn count_where(&self, field: &'static str, value: impl Serialize) -> Result<u64, StoreError> {
        let value = indexed_value::<T>(field, value)?;
        self.backend.count(Collection::of::<T>(), Some((field, value))).await
    }

    /// The documents of `ids` that exist, in the order of `ids` (a repeated id once).
    ///
    /// # Errors
    /// `BAD_REQUEST` ([`StoreError::Invalid`]) for more than [`MAX_PAGE`] ids; `UNAVAILABLE`,
    /// `INTERNAL`.
    pub async fn get_many(&self, ids: &[u64]) -> Result<Vec<Versioned<T>>, StoreError> {
        if ids.len() > MAX_PAGE {
            return Err(StoreError::Invalid(format!("at most {MAX_PAGE} documents at once")));
        }
        let mut wanted: Vec<u64> = ids.iter().copied().filter(|id| *id <= MAX_ID).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.backend.get_many(Collection::of::<T>(), wanted).await?;
        let mut found: std::collections::HashMap<u64, RawDoc> =
            found.into_iter().map(|raw| (raw.id, raw)).collect();
        let ordered = ids.iter().filter_map(|id| found.remove(id));
        ordered.map(decode).collect::<Result<_, _>>().map_err(|error| self.failed(error))
    }

    /// A query on the sorted index `index` (one of `T::SORTED`): narrow it with
    /// [`Query::eq`] and [`Query::range`], then read a [`Page`] or a count.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use mortar::store::{Store, Cursor, StoreError};
    /// #[derive(Serialize, Deserialize, mortar::Document)]
    /// #[document(collection = "entry", sorted(name = "by_score", fields("board", "score", "at")))]
    /// struct Entry { board: String, score: i64, at: u64 }
    ///
    /// async fn top(entries: &Store<Entry>, cursor: Option<&str>) -> Result<(), StoreError> {
    ///     let mut query = entries.sorted("by_score").eq("daily").descending().limit(100);
    ///     if let Some(cursor) = cursor {
    ///         query = query.after(&cursor.parse::<Cursor>()?);
    ///     }
    ///     let page = query.page().await?;
    ///     let above_1000 = entries.sorted("by_score").eq("daily").range(1001..).count().await?;
    ///     # let _ = (page.next.map(|next| next.to_string()), above_1000);
    ///     Ok(())
    /// }
    /// ```
    pub fn sorted(&self, index: &'static str) -> Query<T> {
        Query {
            store: self.clone(),
            index,
            equal: Vec::new(),
            from: Bound::Unbounded,
            to: Bound::Unbounded,
            descending: false,
            after: None,
            limit: DEFAULT_PAGE,
            error: None,
        }
    }
}

/// How many documents a [`Query`] returns per page unless told otherwise.
pub const DEFAULT_PAGE: usize = 100;

/// The largest page a [`Query`] reads at once.
pub const MAX_PAGE: usize = 10_000;

/// A query on a sorted index of `T`; see [`Store::sorted`]. Building it cannot fail: a mistake
/// (a value that does not serialize, an unknown index) is reported by [`Query::page`] or
/// [`Query::count`].
#[must_use = "a query does nothing until its page or count is read"]
pub struct Query<T> {
    store: Store<T>,
    index: &'static str,
    equal: Vec<serde_json::Value>,
    from: Bound<serde_json::Value>,
    to: Bound<serde_json::Value>,
    descending: bool,
    after: Option<Cursor>,
    limit: usize,
    error: Option<StoreError>,
}

impl<T: Document> Query<T> {
    fn value(&mut self, value: impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or_else(|error| {
            self.error
                .get_or_insert(StoreError::Internal(format!("query value does not serialize: {error}")));
            serde_json::Value::Null
        })
    }

    /// Only documents whose next field of the index (the first, then the second, …) equals
    /// `value`.
    pub fn eq(mut self, value: impl Serialize) -> Self {
        let value = self.value(value);
        self.equal.push(value);
        self
    }

    /// Only documents whose field after the [`Query::eq`] ones is within `range`, e.g.
    /// `100..`, `..=0`, `10..20`.
    pub fn range<V: Serialize>(mut self, range: impl RangeBounds<V>) -> Self {
        let mut bound = |bound: Bound<&V>| match bound {
            Bound::Included(value) => Bound::Included(self.value(value)),
            Bound::Excluded(value) => Bound::Excluded(self.value(value)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (from, to) = (bound(range.start_bound()), bound(range.end_bound()));
        (self.from, self.to) = (from, to);
        self
    }

    /// Highest first (the default is lowest first); equal values by descending id.
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    /// At most `limit` documents per page (1 to [`MAX_PAGE`]; [`DEFAULT_PAGE`] unless set).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, MAX_PAGE);
        self
    }

    /// The page after the one `cursor` ended (its [`Page::next`]).
    pub fn after(mut self, cursor: &Cursor) -> Self {
        self.after = Some(cursor.clone());
        self
    }

    fn scan(self) -> Result<(Store<T>, Scan), StoreError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let collection = Collection::of::<T>();
        let index = collection.sorted_index(self.index).ok_or_else(|| {
            StoreError::Internal(format!(
                "`{}` is not a sorted index of collection `{}`",
                self.index,
                T::COLLECTION
            ))
        })?;
        let scan = Scan {
            index,
            equal: self.equal,
            from: self.from,
            to: self.to,
            descending: self.descending,
            after: self.after.map(|cursor| cursor.0),
            limit: self.limit,
        };
        scan.check()?;
        Ok((self.store, scan))
    }

    /// The page: up to the limit of documents in order, and a cursor to the next page unless
    /// this one reached the end.
    ///
    /// # Errors
    /// `BAD_REQUEST` ([`StoreError::Invalid`]) for a cursor of another query or a value no sorted
    /// index orders; `INTERNAL` for an index `T` does not declare; `UNAVAILABLE`.
    pub async fn page(self) -> Result<Page<T>, StoreError> {
        let (store, scan) = self.scan()?;
        let found = store.backend.scan(Collection::of::<T>(), scan.clone()).await?;
        let next = match found.last() {
            Some(last) if found.len() == scan.limit => scan.position_of(last).map(Cursor),
            _ => None,
        };
        let items =
            found.into_iter().map(decode).collect::<Result<_, _>>().map_err(|error| store.failed(error))?;
        Ok(Page { items, next })
    }

    /// How many documents the query covers, all pages together. Costs a walk over them in the
    /// embedded store and a counted index range in MongoDB: for ranks at scale, keep a sorted set
    /// in the cache.
    ///
    /// # Errors
    /// As [`Query::page`].
    pub async fn count(self) -> Result<u64, StoreError> {
        let (store, scan) = self.scan()?;
        store.backend.count_scan(Collection::of::<T>(), scan).await
    }
}

/// One page of a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The documents, in the query's order.
    pub items: Vec<Versioned<T>>,
    /// Where the next page starts; `None` when this page is the last. (A full last page gets a
    /// cursor whose page is empty.)
    pub next: Option<Cursor>,
}

/// Where the next page of a [`Query`] starts: the last document read. Opaque: it is written as a
/// short URL-safe string ([`fmt::Display`]) a client can hold and send back, and read with
/// [`str::parse`], which refuses anything that is not a cursor (`BAD_REQUEST`).
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor(Position);

impl Eq for Cursor {}

/// The longest cursor string [`Cursor::from_str`] reads.
pub const MAX_CURSOR_LEN: usize = 1024;

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = self.0.values.clone();
        key.push(self.0.id.into());
        let json = serde_json::Value::Array(key).to_string();
        f.write_str(&data_encoding::BASE64URL_NOPAD.encode(json.as_bytes()))
    }
}

impl FromStr for Cursor {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::Invalid("not a cursor of this query".into());
        if text.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let json = data_encoding::BASE64URL_NOPAD.decode(text.as_bytes()).map_err(|_| invalid())?;
        let Ok(serde_json::Value::Array(mut key)) = serde_json::from_slice(&json) else {
            return Err(invalid());
        };
        let id = key.pop().and_then(|id| id.as_u64()).ok_or_else(invalid)?;
        Ok(Self(Position { values: key, id }))
    }
}

/// Why [`Store::update`] or [`Store::upsert`] wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// The store refused or failed.
    Store(StoreError),
    /// The change closure refused with this code.
    Refused(Code),
}

impl UpdateError {
    /// The code a client gets.
    pub fn code(&self) -> Code {
        match self {
            Self::Store(error) => error.code(),
            Self::Refused(code) => *code,
        }
    }
}

impl From<StoreError> for UpdateError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<UpdateError> for Code {
    fn from(error: UpdateError) -> Self {
        error.code()
    }
}

/// The error's code, without a reason, as for a [`StoreError`].
impl From<UpdateError> for Failure {
    fn from(error: UpdateError) -> Self {
        error.code().into()
    }
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(error) => error.fmt(f),
            Self::Refused(code) => write!(f, "the change was refused with {code}"),
        }
    }
}

impl std::error::Error for UpdateError {}

fn check_id(id: u64) -> Result<u64, StoreError> {
    match id {
        0..=MAX_ID => Ok(id),
        _ => Err(StoreError::Internal(format!("document id {id} is above the largest storable id {MAX_ID}"))),
    }
}

fn encode<T: Document>(doc: &T) -> Result<Fields, StoreError> {
    match serde_json::to_value(doc) {
        Ok(serde_json::Value::Object(fields)) => {
            Collection::of::<T>().sort_keys(&fields)?; // refused here, the same for every backend
            Ok(fields)
        }
        Ok(_) => Err(StoreError::Internal("a document must serialize as a struct (a map of fields)".into())),
        Err(error) => Err(StoreError::Internal(format!("document does not serialize: {error}"))),
    }
}

fn decode<T: DeserializeOwned>(raw: RawDoc) -> Result<Versioned<T>, StoreError> {
    let doc = serde_json::from_value(serde_json::Value::Object(raw.fields)).map_err(|error| {
        StoreError::Internal(format!("stored document {} does not decode: {error}", raw.id))
    })?;
    Ok(Versioned { id: raw.id, version: raw.version, doc })
}

fn indexed_value<T: Document>(
    field: &'static str,
    value: impl Serialize,
) -> Result<serde_json::Value, StoreError> {
    if Collection::of::<T>().index(field).is_none() {
        return Err(StoreError::Internal(format!(
            "`{field}` is not an index of collection `{}`",
            T::COLLECTION
        )));
    }
    serde_json::to_value(value)
        .map_err(|error| StoreError::Internal(format!("index value does not serialize: {error}")))
}
