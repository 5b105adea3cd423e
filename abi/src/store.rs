//! The document store's contract between the host and module code: collections and their
//! indexes as module code declares them, the encoded documents a backend stores, and
//! [`StoreBackend`], what a backend (embedded, MongoDB) does. Module code uses the SDK's typed
//! `mortar::store::Store`.

use crate::{
    code::{Code, Failure},
    future::BoxFuture,
};
use serde::{Serialize, de::DeserializeOwned};
use std::fmt;

/// A document's fields, as serde writes them: what backends store.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// A document type: where it is kept and which of its fields are indexed.
pub trait Document: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The collection's name: lower-case letters, digits and `_`, unique in the cluster.
    const COLLECTION: &'static str;
    /// Indexed top-level fields: `Store::find` and `Store::count_where` look documents up by
    /// them; a unique one refuses a second document with the same value (`ALREADY_EXISTS`).
    const INDEXES: &'static [Index] = &[];
}

/// An indexed top-level field of a document. A document whose field is missing or `null` is not
/// in that index (two such documents never clash on a unique index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Index {
    /// The field's name, as serde writes it.
    pub field: &'static str,
    /// Whether two documents may not share a value.
    pub unique: bool,
}

impl Index {
    /// A unique index on `field`.
    pub const fn unique(field: &'static str) -> Self {
        Self { field, unique: true }
    }

    /// A non-unique index on `field`, for lookups.
    pub const fn lookup(field: &'static str) -> Self {
        Self { field, unique: false }
    }
}

/// A collection as a backend sees it: its name and indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Collection {
    /// [`Document::COLLECTION`].
    pub name: &'static str,
    /// [`Document::INDEXES`].
    pub indexes: &'static [Index],
}

impl Collection {
    /// The collection of document type `T`.
    pub fn of<T: Document>() -> Self {
        Self { name: T::COLLECTION, indexes: T::INDEXES }
    }

    /// The declared index on `field`, if any.
    pub fn index(&self, field: &str) -> Option<&'static Index> {
        self.indexes.iter().find(|index| index.field == field)
    }
}

/// A document type as `#[derive(mortar::Document)]` registers it, so a backend can prepare its
/// collection (MongoDB: create its indexes) when the node starts, and a node knows which modules
/// keep documents: those declared in the crate that declares the type.
#[derive(Debug)]
pub struct DocumentDecl {
    /// The document type's collection.
    pub collection: fn() -> Collection,
    /// Where it is declared (`crate::path`): its crate's modules keep these documents.
    pub defined_at: &'static str,
}

inventory::collect!(DocumentDecl);

/// Every document type declared with the derive in this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static DocumentDecl> {
    inventory::iter::<DocumentDecl>.into_iter()
}

/// The collections of every document type declared with the derive in this program, in no
/// particular order.
pub fn declared() -> impl Iterator<Item = Collection> {
    registered().map(|decl| (decl.collection)())
}

/// A stored document as a backend returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawDoc {
    /// The document's id.
    pub id: u64,
    /// Its version.
    pub version: u64,
    /// Its fields.
    pub fields: Fields,
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No document has that id.
    NotFound,
    /// A document with that id, or that value of a unique index (named), exists.
    AlreadyExists {
        /// The unique field that clashed; none for the id.
        index: Option<String>,
    },
    /// The document's version is not the one the write expected: another write came first.
    Conflict,
    /// The backend cannot be reached.
    Unavailable(String),
    /// Anything else (a corrupt record, a field not indexed, a backend bug); logged by the
    /// host, never sent to a client.
    Internal(String),
}

impl StoreError {
    /// The code a client gets for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound => Code::NOT_FOUND,
            Self::AlreadyExists { .. } => Code::ALREADY_EXISTS,
            Self::Conflict => Code::CONFLICT,
            Self::Unavailable(_) => Code::UNAVAILABLE,
            Self::Internal(_) => Code::INTERNAL,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no such document"),
            Self::AlreadyExists { index: None } => f.write_str("a document with that id exists"),
            Self::AlreadyExists { index: Some(field) } => write!(f, "a document with that `{field}` exists"),
            Self::Conflict => f.write_str("the document changed since it was read"),
            Self::Unavailable(why) => write!(f, "store unavailable: {why}"),
            Self::Internal(why) => write!(f, "store error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for Code {
    fn from(error: StoreError) -> Self {
        error.code()
    }
}

/// The error's code, without a reason: a store error's detail is for the host's log, not for the
/// client.
impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        error.code().into()
    }
}

/// What a host's store does, on untyped documents. Implemented by the host's backends (embedded,
/// MongoDB); module code uses the SDK's `Store`.
///
/// Every write is durable when its future completes with `Ok`.
pub trait StoreBackend: Send + Sync + 'static {
    /// The document `id`, if any.
    fn get(&self, collection: Collection, id: u64) -> BoxFuture<Result<Option<RawDoc>, StoreError>>;
    /// Creates document `id` at version 1.
    fn insert(&self, collection: Collection, id: u64, fields: Fields) -> BoxFuture<Result<u64, StoreError>>;
    /// Replaces document `id` if its version is `expected`; the new version.
    fn replace(
        &self,
        collection: Collection,
        id: u64,
        expected: u64,
        fields: Fields,
    ) -> BoxFuture<Result<u64, StoreError>>;
    /// Deletes document `id`; whether it existed.
    fn delete(&self, collection: Collection, id: u64) -> BoxFuture<Result<bool, StoreError>>;
    /// Up to `limit` documents whose indexed `field` equals `value`, by ascending id.
    fn find(
        &self,
        collection: Collection,
        field: &'static str,
        value: serde_json::Value,
        limit: usize,
    ) -> BoxFuture<Result<Vec<RawDoc>, StoreError>>;
    /// How many documents the collection has, or how many whose indexed `field` equals the value.
    fn count(
        &self,
        collection: Collection,
        filter: Option<(&'static str, serde_json::Value)>,
    ) -> BoxFuture<Result<u64, StoreError>>;
    /// Waits before retry `attempt` (1, 2, …) of a conflicting update: a growing pause with
    /// jitter, so racing writers do not collide again in step.
    fn backoff(&self, attempt: u32) -> BoxFuture<()>;

    /// A document of `collection` did not encode or decode on the module's side (`error` is
    /// `INTERNAL`): for the host's log, since the client sees only the code.
    fn failed(&self, _collection: Collection, _error: &StoreError) {}
}

/// The largest id every backend can store (MongoDB's integers are signed).
pub const MAX_ID: u64 = i64::MAX as u64;
