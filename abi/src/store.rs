//! The document store's contract between the host and module code: collections and their
//! indexes as module code declares them, the encoded documents a backend stores, and
//! [`StoreBackend`], what a backend (embedded, MongoDB) does. Module code uses the SDK's typed
//! `mortar::store::Store`.

use crate::{
    code::{Code, Failure},
    future::BoxFuture,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::{fmt, ops::Bound};

/// A document's fields, as serde writes them: what backends store.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// A document type: where it is kept and which of its fields are indexed.
pub trait Document: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The collection's name: lower-case letters, digits and `_`, unique in the cluster.
    const COLLECTION: &'static str;
    /// Indexed top-level fields: `Store::find` and `Store::count_where` look documents up by
    /// them; a unique one refuses a second document with the same value (`ALREADY_EXISTS`).
    const INDEXES: &'static [Index] = &[];
    /// Sorted indexes: `Store::sorted` pages through documents in their order, over a range,
    /// and counts them.
    const SORTED: &'static [SortedIndex] = &[];
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

/// An index that keeps documents in the order of the values of one or more top-level fields,
/// then of their ids: e.g. `(board, score, at)` orders a board's entries by score, and equal
/// scores by who reached them first.
///
/// Its fields hold integers (within `i64`), strings (ordered by their UTF-8 bytes) or booleans;
/// a document where one of them is missing or `null` is not in the index, and a write that puts
/// any other value (a fraction, a list, an object) into one is refused (`INTERNAL`, with the
/// field), so every backend orders the same values the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SortedIndex {
    /// Its name, unique in its collection: lower-case letters, digits and `_`.
    pub name: &'static str,
    /// The fields, as serde writes them, most significant first.
    pub fields: &'static [&'static str],
}

impl SortedIndex {
    /// The index `name` on `fields`.
    pub const fn new(name: &'static str, fields: &'static [&'static str]) -> Self {
        Self { name, fields }
    }

    /// The index's key of a document: its fields' values, or none when one is missing or
    /// `null`.
    ///
    /// # Errors
    /// `INTERNAL` when a field holds a value a sorted index does not order.
    pub fn key_of(&self, fields: &Fields) -> Result<Option<Vec<Value>>, StoreError> {
        let mut key = Vec::with_capacity(self.fields.len());
        for field in self.fields {
            match fields.get(*field) {
                None | Some(Value::Null) => return Ok(None),
                Some(value) => key.push(sortable(self, field, value)?.clone()),
            }
        }
        Ok(Some(key))
    }
}

/// `value` when a sorted index orders it: an integer within `i64`, a string or a boolean.
///
/// # Errors
/// `INTERNAL`, naming the index and the field.
pub fn sortable<'v>(index: &SortedIndex, field: &str, value: &'v Value) -> Result<&'v Value, StoreError> {
    match value {
        Value::Number(n) if n.is_i64() => Ok(value),
        Value::String(_) | Value::Bool(_) => Ok(value),
        _ => Err(StoreError::Internal(format!(
            "field `{field}` of sorted index `{}` holds {value}: a sorted index orders integers (within i64), strings and booleans",
            index.name
        ))),
    }
}

/// A collection as a backend sees it: its name and indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Collection {
    /// [`Document::COLLECTION`].
    pub name: &'static str,
    /// [`Document::INDEXES`].
    pub indexes: &'static [Index],
    /// [`Document::SORTED`].
    pub sorted: &'static [SortedIndex],
}

impl Collection {
    /// The collection of document type `T`.
    pub fn of<T: Document>() -> Self {
        Self { name: T::COLLECTION, indexes: T::INDEXES, sorted: T::SORTED }
    }

    /// The declared index on `field`, if any.
    pub fn index(&self, field: &str) -> Option<&'static Index> {
        self.indexes.iter().find(|index| index.field == field)
    }

    /// The declared sorted index `name`, if any.
    pub fn sorted_index(&self, name: &str) -> Option<&'static SortedIndex> {
        self.sorted.iter().find(|index| index.name == name)
    }

    /// The sorted-index keys of a document about to be written.
    ///
    /// # Errors
    /// `INTERNAL` when a sorted field holds a value no sorted index orders.
    pub fn sort_keys(&self, fields: &Fields) -> Result<Vec<Option<Vec<Value>>>, StoreError> {
        self.sorted.iter().map(|index| index.key_of(fields)).collect()
    }
}

/// A page through a sorted index, as a backend runs it: the documents whose first fields equal
/// `equal`, whose next field is within `from` ..`to`, in the index's order (or its reverse),
/// after `after`, at most `limit`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// The index.
    pub index: &'static SortedIndex,
    /// The values of its first `equal.len()` fields (fewer than all of them).
    pub equal: Vec<Value>,
    /// The lower bound of the next field.
    pub from: Bound<Value>,
    /// The upper bound of the next field.
    pub to: Bound<Value>,
    /// Highest first (ids too) instead of lowest first.
    pub descending: bool,
    /// Resume after this document (in the scan's order): the previous page's last.
    pub after: Option<Position>,
    /// At most this many documents (a count ignores it, and `after`).
    pub limit: usize,
}

/// Where a document sits in a [`Scan`]: the values of the index's fields after the scan's
/// `equal` ones, and its id.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    /// The values of the fields after the scan's `equal` ones.
    pub values: Vec<Value>,
    /// The document's id.
    pub id: u64,
}

impl Scan {
    /// The fields the scan orders by, after its `equal` ones.
    pub fn rest(&self) -> &'static [&'static str] {
        &self.index.fields[self.equal.len().min(self.index.fields.len())..]
    }

    /// The position of `doc` in this scan, when it is in the index.
    pub fn position_of(&self, doc: &RawDoc) -> Option<Position> {
        let values =
            self.rest().iter().map(|field| doc.fields.get(*field).cloned()).collect::<Option<Vec<_>>>()?;
        Some(Position { values, id: doc.id })
    }

    /// Checks what a client could have chosen: as many `equal` values as the index has fields
    /// before the last, sortable values, a position of the right length.
    ///
    /// # Errors
    /// `BAD_REQUEST` ([`StoreError::Invalid`]) with the reason.
    pub fn check(&self) -> Result<(), StoreError> {
        let index = self.index;
        let invalid = |why: String| Err(StoreError::Invalid(why));
        if self.equal.len() >= index.fields.len() {
            return invalid(format!(
                "sorted index `{}` has {} fields: at most {} can be equal",
                index.name,
                index.fields.len(),
                index.fields.len() - 1
            ));
        }
        let next = index.fields[self.equal.len()];
        let bounds = [&self.from, &self.to].into_iter().filter_map(|bound| match bound {
            Bound::Included(value) | Bound::Excluded(value) => Some((next, value)),
            Bound::Unbounded => None,
        });
        let equal = index.fields.iter().copied().zip(&self.equal);
        for (field, value) in equal.chain(bounds) {
            sortable(index, field, value).map_err(|error| StoreError::Invalid(error.to_string()))?;
        }
        if let Some(after) = &self.after {
            if after.values.len() != self.rest().len() || after.id > MAX_ID {
                return invalid("the cursor is not one of this query".into());
            }
            for (field, value) in self.rest().iter().zip(&after.values) {
                sortable(index, field, value)
                    .map_err(|_| StoreError::Invalid("the cursor is not one of this query".into()))?;
            }
        }
        Ok(())
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
    /// A query's values cannot be used (a cursor of another query, a value no index orders):
    /// `BAD_REQUEST`, with the reason, which may go to the client.
    Invalid(String),
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
            Self::Invalid(_) => Code::BAD_REQUEST,
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
            Self::Invalid(why) => f.write_str(why),
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

/// The error's code, without a reason (a store error's detail is for the host's log, not for the
/// client), except for [`StoreError::Invalid`], whose reason says what in the request was wrong.
impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(why) => Code::BAD_REQUEST.because(why),
            error => error.code().into(),
        }
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
    /// Up to `scan.limit` documents of the sorted index's page `scan` (already checked with
    /// [`Scan::check`]), in its order. Documents written while pages are read are neither
    /// skipped nor repeated unless they moved across the cursor.
    fn scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<Vec<RawDoc>, StoreError>>;
    /// How many documents `scan` covers, all its pages together (its `after` and `limit` aside).
    fn count_scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<u64, StoreError>>;
    /// The documents of `ids` that exist, in no particular order.
    fn get_many(&self, collection: Collection, ids: Vec<u64>) -> BoxFuture<Result<Vec<RawDoc>, StoreError>>;
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

/// A document id made from `parts` (names, numbers as bytes): the same parts give the same id on
/// every node and in every release, within 1..=[`MAX_ID`]. A 63-bit FNV-1a hash, so two different
/// part lists may collide (about once in 10^10 for a million ids): keep the parts in the document
/// too and check them when reading it.
pub fn stable_id(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        // A separator no UTF-8 text holds, so ["ab", "c"] and ["a", "bc"] differ.
        for &byte in part.iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (hash & MAX_ID).max(1)
}
