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
//! Layout: [`Document`] and [`Index`] (the declaration), [`Store`] (the typed handle),
//! [`StoreBackend`] (what a host implements), [`StoreError`] (and its wire codes).

use crate::{Code, Failure};
use serde::{Serialize, de::DeserializeOwned};
use std::{
    fmt,
    marker::PhantomData,
    sync::Arc,
    time::{Duration, Instant},
};

pub use mortar_abi::store::{
    Collection, Document, DocumentDecl, Fields, Index, MAX_ID, RawDoc, StoreBackend, StoreError, declared,
    registered,
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
        let fields = encode(&doc).map_err(|error| self.failed(error))?;
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
        let fields = encode(&doc.doc).map_err(|error| self.failed(error))?;
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

fn encode<T: Serialize>(doc: &T) -> Result<Fields, StoreError> {
    match serde_json::to_value(doc) {
        Ok(serde_json::Value::Object(fields)) => Ok(fields),
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
