//! The embedded store (`storage.url = "embedded"`): one redb database file in `storage.path`,
//! no server.
//!
//! Layout of the file `mortar.redb`: per collection a table `doc/COLLECTION` (id → record), per
//! unique index a table `unique/COLLECTION/FIELD` (value → id), per lookup index a multimap
//! table `lookup/COLLECTION/FIELD` (value → ids) and per sorted index a table
//! `sorted/COLLECTION/NAME` whose keys are the index's values and the id in an order-preserving
//! byte encoding, so a page or a count is one range of it. A unique or lookup key is
//! the field's value as canonical JSON (`"alice"`, `42`). A sorted index declared on a collection
//! that already has documents is filled from them before its collection's first use (the table
//! `mortar/sorted` remembers which fields each one was filled for). A record is one format byte ([`FORMAT`]), the version (8 bytes,
//! little-endian) and the fields as JSON: stable, and readable by any tool.
//!
//! Reads run on the caller's thread against a snapshot. Writes go to one writer thread, which
//! takes every write waiting (up to [`MAX_BATCH`]), applies them in order in one transaction
//! (each checked on its own: a conflicting one fails alone, the others go in), commits it durably
//! (fsync) and only then answers them all: group commit, so durability costs one fsync per batch,
//! not per write. redb's commit is atomic and checksummed: after a crash (`kill -9`, power) the
//! file opens at the last commit, never with half a write.
//!
//! The writer thread ends when the last handle on the store is dropped, after committing and
//! answering what it took; the drop waits for it, so the file is free again when it returns.
//!
//! A commit that fails (a full disk, an I/O error) fails its writes with `UNAVAILABLE`, and redb
//! then refuses every later operation on that handle ("Previous I/O error occurred") until the
//! database is closed and opened again. So the store turns *not writable* ([`EmbeddedStore::writable`],
//! the gauge `mortar_store_writable`, `/readyz` 503) and the writer thread recovers it by itself:
//! 1. writes arriving meanwhile are answered `UNAVAILABLE` at once;
//! 2. after [`RETRY_FIRST`] (doubling up to [`RETRY_MAX`] while it keeps failing) it takes the
//!    database from the readers (reads answer `UNAVAILABLE` meanwhile), waits for the reads
//!    running on it, closes it and opens the file again, which rolls it back to its last commit:
//!    every acknowledged write is in it, since a write is answered only after its commit;
//! 3. it commits a probe (a row of [`PROBE_BYTES`] in table `mortar/probe`, then its removal):
//!    once that succeeds the store is writable again; otherwise it goes on at 2.

use mortar_abi::store::{Collection, Fields, Position, RawDoc, Scan, SortedIndex, StoreBackend, StoreError};
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition, TableError, WriteTransaction,
};
use serde_json::Value;
use std::{
    collections::HashSet,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;

/// The record format's version; a record with another first byte is refused, never misread.
pub const FORMAT: u8 = 1;

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// The file in `storage.path`.
pub const FILE_NAME: &str = "mortar.redb";

/// How long a store that cannot write waits before it first tries again (reopening the file).
pub const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest wait between two tries of a store that cannot write: each reopen after a failure
/// checks the whole file, so a disk that stays full is not hammered.
pub const RETRY_MAX: Duration = Duration::from_secs(8);

/// The database, shared by the readers and the writer thread; none while the writer reopens it.
type Slot = RwLock<Option<Arc<Database>>>;

/// The embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Slot>,
    /// Whether the last commit (or probe) succeeded; shared with the writer thread.
    writable: Arc<AtomicBool>,
    /// To the writer thread; taken on drop, which ends the thread.
    writes: Option<mpsc::Sender<Write>>,
    /// The collections whose sorted indexes are known to be filled.
    prepared: Mutex<HashSet<&'static str>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// One write waiting for the writer thread, with where its answer goes.
struct Write {
    op: Op,
    done: oneshot::Sender<Result<Done, StoreError>>,
}

enum Op {
    Insert {
        collection: Collection,
        id: u64,
        fields: Fields,
    },
    Replace {
        collection: Collection,
        id: u64,
        expected: u64,
        fields: Fields,
    },
    Delete {
        collection: Collection,
        id: u64,
    },
    /// Fills the collection's sorted indexes from its documents where they were not filled for
    /// the fields they have now.
    Prepare {
        collection: Collection,
    },
}

enum Done {
    Version(u64),
    Existed(bool),
}

/// Why the embedded store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the embedded store in {path}: {reason}")]
pub struct OpenError {
    /// The directory.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`, creating the directory when missing.
    ///
    /// # Errors
    /// When the directory cannot be created, or the file cannot be opened (another process holds
    /// it, or it is not a redb file), or the file is empty: redb would make an empty store of it,
    /// and a store file is never empty, so its data was lost (a cut copy, a full disk while it was
    /// copied); the message names the file and says what to do.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let error = |reason: String| OpenError { path: dir.to_owned(), reason };
        std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        let file = dir.join(FILE_NAME);
        if std::fs::metadata(&file).is_ok_and(|meta| meta.is_file() && meta.len() == 0) {
            return Err(error(format!(
                "{} is empty (0 bytes), so it holds none of the data it should: restore it from a backup, or delete it to start with an empty store",
                file.display()
            )));
        }
        let db = Database::create(&file).map_err(|e| error(e.to_string()))?;
        let slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let writable = Arc::new(AtomicBool::new(true));
        metrics::gauge!(mortar_telemetry::metrics::STORE_WRITABLE, "backend" => "embedded").set(1.0);
        let (writes, queue) = mpsc::channel();
        let state = Writer { file, slot: slot.clone(), writable: writable.clone(), broken: None };
        let writer = thread::Builder::new()
            .name("mortar-store-writer".into())
            .spawn(move || write_loop(state, &queue))
            .map_err(|e| error(e.to_string()))?;
        let inner = Inner {
            db: slot,
            writable,
            writes: Some(writes),
            prepared: Mutex::default(),
            writer: Some(writer),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Whether the store can write now: false from a failed commit until the writer thread has
    /// reopened the file and committed again (see the module docs). The node's `/readyz` follows it.
    pub fn writable(&self) -> Arc<AtomicBool> {
        self.inner.writable.clone()
    }

    fn write(&self, op: Op) -> mortar_abi::future::BoxFuture<Result<Done, StoreError>> {
        let (done, answer) = oneshot::channel();
        let sent = match &self.inner.writes {
            Some(writes) => writes.send(Write { op, done }).map_err(drop),
            None => Err(()),
        };
        Box::pin(async move {
            sent.map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
            answer.await.map_err(|_| StoreError::Internal("the store's writer dropped a write".into()))?
        })
    }

    /// Has the writer fill `collection`'s sorted indexes, once per store, before the first use.
    async fn prepare(&self, collection: Collection) -> Result<(), StoreError> {
        let prepared = |store: &Self| {
            store.inner.prepared.lock().unwrap_or_else(PoisonError::into_inner).contains(collection.name)
        };
        if collection.sorted.is_empty() || prepared(self) {
            return Ok(());
        }
        self.write(Op::Prepare { collection }).await?;
        self.inner.prepared.lock().unwrap_or_else(PoisonError::into_inner).insert(collection.name);
        Ok(())
    }

    /// A write to a collection, once its sorted indexes are filled.
    fn write_to(
        &self,
        collection: Collection,
        op: Op,
    ) -> mortar_abi::future::BoxFuture<Result<Done, StoreError>> {
        if collection.sorted.is_empty() {
            return self.write(op); // nothing to fill: no extra future on the write path
        }
        let store = self.clone();
        Box::pin(async move {
            store.prepare(collection).await?;
            store.write(op).await
        })
    }

    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.inner.db.read().unwrap_or_else(PoisonError::into_inner).clone();
        let db = db.ok_or_else(|| {
            StoreError::Unavailable("the embedded store is being reopened after a failed write".into())
        })?;
        let txn = db.begin_read().map_err(storage_error)?;
        read(&txn)
    }
}

impl StoreBackend for EmbeddedStore {
    fn get(
        &self,
        collection: Collection,
        id: u64,
    ) -> mortar_abi::future::BoxFuture<Result<Option<RawDoc>, StoreError>> {
        let found = self.read(|txn| get_doc(txn, collection, id));
        Box::pin(std::future::ready(found))
    }

    fn insert(
        &self,
        collection: Collection,
        id: u64,
        fields: Fields,
    ) -> mortar_abi::future::BoxFuture<Result<u64, StoreError>> {
        let write = self.write_to(collection, Op::Insert { collection, id, fields });
        Box::pin(async move { version(write.await?) })
    }

    fn replace(
        &self,
        collection: Collection,
        id: u64,
        expected: u64,
        fields: Fields,
    ) -> mortar_abi::future::BoxFuture<Result<u64, StoreError>> {
        let write = self.write_to(collection, Op::Replace { collection, id, expected, fields });
        Box::pin(async move { version(write.await?) })
    }

    fn delete(
        &self,
        collection: Collection,
        id: u64,
    ) -> mortar_abi::future::BoxFuture<Result<bool, StoreError>> {
        let write = self.write_to(collection, Op::Delete { collection, id });
        Box::pin(async move {
            match write.await? {
                Done::Existed(existed) => Ok(existed),
                Done::Version(_) => Err(StoreError::Internal("delete answered a version".into())),
            }
        })
    }

    fn find(
        &self,
        collection: Collection,
        field: &'static str,
        value: serde_json::Value,
        limit: usize,
    ) -> mortar_abi::future::BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let found =
            self.read(|txn| get_docs(txn, collection, ids_where(txn, collection, field, &value, limit)?));
        Box::pin(std::future::ready(found))
    }

    fn count(
        &self,
        collection: Collection,
        filter: Option<(&'static str, serde_json::Value)>,
    ) -> mortar_abi::future::BoxFuture<Result<u64, StoreError>> {
        let counted = self.read(|txn| match &filter {
            None => match existing(txn.open_table(docs_table(collection).as_def()))? {
                Some(table) => table.len().map_err(storage_error),
                None => Ok(0),
            },
            Some((field, value)) => Ok(ids_where(txn, collection, field, value, usize::MAX)?.len() as u64),
        });
        Box::pin(std::future::ready(counted))
    }

    fn scan(
        &self,
        collection: Collection,
        scan: Scan,
    ) -> mortar_abi::future::BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            store.prepare(collection).await?;
            store.read(|txn| get_docs(txn, collection, sorted_ids(txn, collection, &scan, scan.limit)?))
        })
    }

    fn count_scan(
        &self,
        collection: Collection,
        scan: Scan,
    ) -> mortar_abi::future::BoxFuture<Result<u64, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            store.prepare(collection).await?;
            let whole = Scan { after: None, ..scan };
            store.read(|txn| {
                let Some((table, (from, to))) = sorted_range(txn, collection, &whole)? else { return Ok(0) };
                let range = table.range::<&[u8]>((as_slice(&from), as_slice(&to))).map_err(storage_error)?;
                let mut counted = 0;
                for entry in range {
                    entry.map_err(storage_error)?;
                    counted += 1;
                }
                Ok(counted)
            })
        })
    }

    fn get_many(
        &self,
        collection: Collection,
        ids: Vec<u64>,
    ) -> mortar_abi::future::BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let found = self.read(|txn| get_docs(txn, collection, ids));
        Box::pin(std::future::ready(found))
    }

    fn backoff(&self, attempt: u32) -> mortar_abi::future::BoxFuture<()> {
        super::backoff(attempt)
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

type SortedTable = redb::ReadOnlyTable<&'static [u8], ()>;

/// A key range of a sorted index's table.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The sorted index's table and the key range `scan` covers (its cursor included); none when
/// the table was never written or the range is empty.
fn sorted_range(
    txn: &redb::ReadTransaction,
    collection: Collection,
    scan: &Scan,
) -> Result<Option<(SortedTable, KeyRange)>, StoreError> {
    let mut prefix = Vec::new();
    for value in &scan.equal {
        push_value(&mut prefix, value);
    }
    let with = |value: &Value| {
        let mut key = prefix.clone();
        push_value(&mut key, value);
        key
    };
    // As in MongoDB, a bound on one side keeps the range to its value's type (`100..` is the
    // integers from 100, not also every string): the other side stops at that type's end.
    let bracket = [&scan.from, &scan.to].into_iter().find_map(|bound| match bound {
        Bound::Included(value) | Bound::Excluded(value) => Some(with(value)[..=prefix.len()].to_vec()),
        Bound::Unbounded => None,
    });
    let whole = bracket.unwrap_or_else(|| prefix.clone());
    let mut from = match &scan.from {
        Bound::Unbounded => Bound::Included(whole.clone()),
        Bound::Included(value) => Bound::Included(with(value)),
        Bound::Excluded(value) => past(with(value)),
    };
    let mut to = match &scan.to {
        Bound::Unbounded => past(whole),
        Bound::Included(value) => past(with(value)),
        Bound::Excluded(value) => Bound::Excluded(with(value)),
    };
    if let Some(Position { values, id }) = &scan.after {
        let mut key = prefix.clone();
        for value in values {
            push_value(&mut key, value);
        }
        key.extend_from_slice(&id.to_be_bytes());
        if scan.descending {
            to = tighter(to, Bound::Excluded(key), std::cmp::Ordering::Less);
        } else {
            from = tighter(from, Bound::Excluded(key), std::cmp::Ordering::Greater);
        }
    }
    let empty = match (&from, &to) {
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a > b || (a == b && !(matches!(from, Bound::Included(_)) && matches!(to, Bound::Included(_))))
        }
        _ => false,
    };
    let name = sorted_table(collection, scan.index);
    let Some(table) = existing(txn.open_table(name.as_sorted()))? else { return Ok(None) };
    Ok((!empty).then_some((table, (from, to))))
}

/// Ids of up to `limit` documents of `scan`, in its order.
fn sorted_ids(
    txn: &redb::ReadTransaction,
    collection: Collection,
    scan: &Scan,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    let Some((table, (from, to))) = sorted_range(txn, collection, scan)? else { return Ok(Vec::new()) };
    let range = table.range::<&[u8]>((as_slice(&from), as_slice(&to))).map_err(storage_error)?;
    let id_of = |entry: Result<
        (redb::AccessGuard<'_, &'static [u8]>, redb::AccessGuard<'_, ()>),
        redb::StorageError,
    >| {
        let (key, _) = entry.map_err(storage_error)?;
        let key = key.value();
        let id =
            key.get(key.len().saturating_sub(8)..).and_then(|id| id.try_into().ok()).map(u64::from_be_bytes);
        id.ok_or_else(|| {
            StoreError::Internal(format!("a key of sorted index `{}` is too short", scan.index.name))
        })
    };
    if scan.descending {
        range.rev().take(limit).map(id_of).collect()
    } else {
        range.take(limit).map(id_of).collect()
    }
}

/// Of two bounds on the same side, the one that lets fewer keys through: `keep` is the ordering
/// a lower bound (`Greater`) or an upper bound (`Less`) must have to be the tighter one.
fn tighter(current: Bound<Vec<u8>>, other: Bound<Vec<u8>>, keep: std::cmp::Ordering) -> Bound<Vec<u8>> {
    match (&current, &other) {
        (Bound::Unbounded, _) => other,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            match b.cmp(a) {
                ordering if ordering == keep => other,
                std::cmp::Ordering::Equal if matches!(other, Bound::Excluded(_)) => other,
                _ => current,
            }
        }
        (_, Bound::Unbounded) => current,
    }
}

/// The bound just past every key that starts with `prefix`: the prefix with its last byte that
/// is not 0xFF raised by one (and the rest cut); unbounded when there is none.
fn past(mut prefix: Vec<u8>) -> Bound<Vec<u8>> {
    while let Some(last) = prefix.pop() {
        if last < u8::MAX {
            prefix.push(last + 1);
            return Bound::Excluded(prefix);
        }
    }
    Bound::Unbounded
}

/// Appends `value` in an encoding whose byte order is the values' order (integers, then strings by
/// their bytes, then booleans, as MongoDB orders them) and in which no value's encoding is the
/// start of another's.
fn push_value(key: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Number(n) => {
            key.push(0x10);
            let n = n.as_i64().unwrap_or_default(); // only integers are sortable (checked before)
            key.extend_from_slice(&((n as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::String(text) => {
            key.push(0x20);
            for &byte in text.as_bytes() {
                key.push(byte);
                if byte == 0 {
                    key.push(0xFF);
                }
            }
            key.extend_from_slice(&[0, 0]);
        }
        Value::Bool(flag) => key.extend_from_slice(&[0x30, u8::from(*flag)]),
        _ => key.push(0x00), // never in an index: refused before it is written
    }
}

/// The key of document `id` in sorted index `index`: its values, then its id; none when it is
/// not in the index.
fn sort_key(index: &SortedIndex, id: u64, fields: &Fields) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(values) = index.key_of(fields)? else { return Ok(None) };
    let mut key = Vec::with_capacity(16 * values.len() + 8);
    for value in &values {
        push_value(&mut key, value);
    }
    key.extend_from_slice(&id.to_be_bytes());
    Ok(Some(key))
}

fn version(done: Done) -> Result<u64, StoreError> {
    match done {
        Done::Version(version) => Ok(version),
        Done::Existed(_) => Err(StoreError::Internal("a write answered no version".into())),
    }
}

fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

/// A redb error: `UNAVAILABLE` when the file cannot be used now (an I/O error, or one before it
/// that the database still remembers), else internal.
fn storage_error(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        error @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
            StoreError::Unavailable(error.to_string())
        }
        error => StoreError::Internal(error.to_string()),
    }
}

/// A table name owned for the length of one use (redb takes `&str` names).
struct Name(String);

impl Name {
    fn as_def(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.0)
    }

    fn as_unique(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.0)
    }

    fn as_lookup(&self) -> MultimapTableDefinition<'_, &'static str, u64> {
        MultimapTableDefinition::new(&self.0)
    }

    fn as_sorted(&self) -> TableDefinition<'_, &'static [u8], ()> {
        TableDefinition::new(&self.0)
    }
}

fn sorted_table(collection: Collection, index: &SortedIndex) -> Name {
    Name(format!("sorted/{}/{}", collection.name, index.name))
}

/// Which fields each sorted index was filled for: `COLLECTION/NAME` → `field,field,…`.
const SORTED_FILLED: TableDefinition<'static, &'static str, &'static str> =
    TableDefinition::new("mortar/sorted");

fn docs_table(collection: Collection) -> Name {
    Name(format!("doc/{}", collection.name))
}

fn index_table(collection: Collection, field: &str, unique: bool) -> Name {
    let kind = if unique { "unique" } else { "lookup" };
    Name(format!("{kind}/{}/{field}", collection.name))
}

/// The index key of a field value: canonical JSON; none for a missing or null field.
fn index_key(fields: &Fields, field: &str) -> Option<String> {
    match fields.get(field) {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(value.to_string()),
    }
}

fn encode(version: u64, fields: &Fields) -> Result<Vec<u8>, StoreError> {
    let mut record = Vec::with_capacity(64);
    record.push(FORMAT);
    record.extend_from_slice(&version.to_le_bytes());
    serde_json::to_writer(&mut record, fields).map_err(internal)?;
    Ok(record)
}

fn decode(id: u64, record: &[u8]) -> Result<RawDoc, StoreError> {
    let corrupt = |why: &str| StoreError::Internal(format!("record {id}: {why}"));
    let (&format, rest) = record.split_first().ok_or_else(|| corrupt("empty"))?;
    if format != FORMAT {
        return Err(corrupt(&format!("format {format}, this build reads {FORMAT}")));
    }
    let (version, json) = rest.split_at_checked(8).ok_or_else(|| corrupt("too short"))?;
    let version = u64::from_le_bytes(version.try_into().map_err(|_| corrupt("too short"))?);
    let fields = serde_json::from_slice(json).map_err(|error| corrupt(&error.to_string()))?;
    Ok(RawDoc { id, version, fields })
}

/// A table a read opened, or none when nothing was ever written to it.
fn existing<T>(opened: Result<T, TableError>) -> Result<Option<T>, StoreError> {
    match opened {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(storage_error(error)),
    }
}

fn get_doc(
    txn: &redb::ReadTransaction,
    collection: Collection,
    id: u64,
) -> Result<Option<RawDoc>, StoreError> {
    let name = docs_table(collection);
    let Some(table) = existing(txn.open_table(name.as_def()))? else { return Ok(None) };
    match table.get(id).map_err(storage_error)? {
        Some(record) => decode(id, record.value()).map(Some),
        None => Ok(None),
    }
}

/// The documents of `ids` that exist, in that order.
fn get_docs(
    txn: &redb::ReadTransaction,
    collection: Collection,
    ids: Vec<u64>,
) -> Result<Vec<RawDoc>, StoreError> {
    let mut docs = Vec::with_capacity(ids.len());
    for id in ids {
        docs.extend(get_doc(txn, collection, id)?);
    }
    Ok(docs)
}

/// Ids whose indexed `field` equals `value`, ascending, at most `limit`.
fn ids_where(
    txn: &redb::ReadTransaction,
    collection: Collection,
    field: &str,
    value: &serde_json::Value,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    let index = collection
        .index(field)
        .ok_or_else(|| StoreError::Internal(format!("`{field}` is not an index of `{}`", collection.name)))?;
    if value.is_null() || limit == 0 {
        return Ok(Vec::new());
    }
    let key = value.to_string();
    let name = index_table(collection, field, index.unique);
    if index.unique {
        let Some(table) = existing(txn.open_table(name.as_unique()))? else { return Ok(Vec::new()) };
        return Ok(table
            .get(key.as_str())
            .map_err(storage_error)?
            .map(|id| id.value())
            .into_iter()
            .collect());
    }
    let Some(table) = existing(txn.open_multimap_table(name.as_lookup()))? else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for id in table.get(key.as_str()).map_err(storage_error)? {
        if ids.len() == limit {
            break;
        }
        ids.push(id.map_err(storage_error)?.value());
    }
    Ok(ids)
}

/// The writer thread's own state.
struct Writer {
    /// The database file.
    file: PathBuf,
    slot: Arc<Slot>,
    writable: Arc<AtomicBool>,
    /// While the store cannot write: why, since when, and when it tries again after how long.
    broken: Option<Broken>,
}

struct Broken {
    reason: String,
    since: Instant,
    next_try: Instant,
    wait: Duration,
}

/// The probe a store that could not write commits to learn that it can again: [`PROBE_BYTES`]
/// written in one commit and removed in the next, so the store is declared writable only when it
/// could take that much (a small probe would fit in the free pages of the file on a disk still
/// full, and the next real batch would fail again), and leaves that much free in its file.
const PROBE: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("mortar/probe");

/// The size of the probe.
pub const PROBE_BYTES: usize = 256 * 1024;

impl Writer {
    /// The database, which only this thread ever takes out of the slot.
    fn db(&self) -> Option<Arc<Database>> {
        self.slot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes the store out of service after a failed commit (see the module docs).
    fn fail(&mut self, reason: String) {
        metrics::counter!(mortar_telemetry::metrics::STORE_WRITE_FAILURES, "backend" => "embedded")
            .increment(1);
        match &mut self.broken {
            Some(broken) => {
                tracing::debug!(file = %self.file.display(), error = %reason, "embedded store still cannot write");
                broken.wait = (broken.wait * 2).min(RETRY_MAX);
                broken.next_try = Instant::now() + broken.wait;
                broken.reason = reason;
            }
            None => {
                tracing::error!(file = %self.file.display(), error = %reason, "embedded store cannot write: writes answer UNAVAILABLE and /readyz 503 until it reopens the file and commits again (tried every few seconds)");
                self.writable.store(false, Ordering::Release);
                metrics::gauge!(mortar_telemetry::metrics::STORE_WRITABLE, "backend" => "embedded").set(0.0);
                let now = Instant::now();
                self.broken =
                    Some(Broken { reason, since: now, next_try: now + RETRY_FIRST, wait: RETRY_FIRST });
            }
        }
    }

    /// Closes the database and opens it again, then commits the probe: writable again when that
    /// succeeds.
    fn recover(&mut self) {
        if let Some(db) = self.slot.write().unwrap_or_else(PoisonError::into_inner).take() {
            // Reads hold the database only while they run on the caller's thread: brief.
            let mut db = db;
            let db = loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => break db,
                    Err(shared) => {
                        db = shared;
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            // A database whose I/O failed writes nothing on close: the next open recovers it.
            if let Err(error) = db.close() {
                tracing::debug!(file = %self.file.display(), %error, "closing the embedded store after its failure");
            }
        }
        let db = match Database::open(&self.file) {
            Ok(db) => Arc::new(db),
            Err(error) => return self.fail(format!("reopening: {error}")),
        };
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = Some(db.clone());
        let probed = probe(&db, Some(&vec![0x5a; PROBE_BYTES])).and_then(|()| probe(&db, None));
        match probed {
            Ok(()) => {
                let down = self.broken.take().map_or(Duration::ZERO, |broken| broken.since.elapsed());
                self.writable.store(true, Ordering::Release);
                metrics::gauge!(mortar_telemetry::metrics::STORE_WRITABLE, "backend" => "embedded").set(1.0);
                tracing::warn!(file = %self.file.display(), down_ms = down.as_millis() as u64, "embedded store writes again: reopened and committed");
            }
            Err(error) => self.fail(format!("after reopening: {error}")),
        }
    }

    /// Why writes are refused now, if they are.
    fn refusal(&self) -> Option<StoreError> {
        self.broken.as_ref().map(|broken| {
            StoreError::Unavailable(format!(
                "the embedded store cannot write ({}); it retries by itself",
                broken.reason
            ))
        })
    }
}

/// Commits `blob` as the probe's one row, or removes it.
fn probe(db: &Database, blob: Option<&[u8]>) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut probe = txn.open_table(PROBE)?;
        match blob {
            Some(blob) => drop(probe.insert(0, blob)?),
            None => drop(probe.remove(0)?),
        }
    }
    Ok(txn.commit()?)
}

/// The writer thread: group commit, and recovery from failed commits (see the module docs).
fn write_loop(mut writer: Writer, queue: &mpsc::Receiver<Write>) {
    loop {
        let first = match &writer.broken {
            None => match queue.recv() {
                Ok(write) => Some(write),
                Err(_) => return,
            },
            Some(broken) => {
                match queue.recv_timeout(broken.next_try.saturating_duration_since(Instant::now())) {
                    Ok(write) => Some(write),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        if writer.broken.as_ref().is_some_and(|broken| Instant::now() >= broken.next_try) {
            writer.recover();
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let results = match (writer.refusal(), writer.db()) {
            (None, Some(db)) => {
                let started = Instant::now();
                let (results, failure) = commit_batch(&db, &batch);
                metrics::histogram!(mortar_telemetry::metrics::STORE_COMMIT_DURATION)
                    .record(started.elapsed());
                metrics::histogram!(mortar_telemetry::metrics::STORE_COMMIT_BATCH).record(batch.len() as f64);
                if let Some(failure) = failure {
                    writer.fail(failure);
                }
                results
            }
            (refusal, _) => {
                let refusal =
                    refusal.unwrap_or_else(|| StoreError::Unavailable("the embedded store is closed".into()));
                batch.iter().map(|_| Err(refusal.clone())).collect()
            }
        };
        for (write, result) in batch.into_iter().zip(results) {
            let _ = write.done.send(result);
        }
    }
}

/// Applies `batch` in one durable transaction; one result per write, and why the transaction
/// failed, if it did. When it fails, every write fails with it.
fn commit_batch(db: &Database, batch: &[Write]) -> (Vec<Result<Done, StoreError>>, Option<String>) {
    let failed = |error: String| {
        let results = batch.iter().map(|_| Err(StoreError::Unavailable(error.clone()))).collect();
        (results, Some(error))
    };
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(error) => return failed(error.to_string()),
    };
    let results: Vec<_> = batch.iter().map(|write| apply(&txn, &write.op)).collect();
    // An I/O error may strike a write halfway: none of the batch is committed.
    if let Some(Err(StoreError::Unavailable(error))) =
        results.iter().find(|result| matches!(result, Err(StoreError::Unavailable(_))))
    {
        let error = format!("write failed: {error}");
        tracing::error!(%error, writes = batch.len(), "embedded store batch abandoned");
        return failed(error);
    }
    match txn.commit() {
        Ok(()) => (results, None),
        Err(error) => {
            tracing::error!(%error, writes = batch.len(), "embedded store commit failed");
            failed(format!("commit failed: {error}"))
        }
    }
}

/// One write inside the batch's transaction. Every check (the id, the version, unique values,
/// a stored record that decodes) runs before the first change, so a write a check refuses changes
/// nothing; an I/O error fails the whole batch (see [`commit_batch`]).
fn apply(txn: &WriteTransaction, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Insert { collection, id, fields } => {
            let name = docs_table(*collection);
            let mut docs = txn.open_table(name.as_def()).map_err(storage_error)?;
            if docs.get(*id).map_err(storage_error)?.is_some() {
                return Err(StoreError::AlreadyExists { index: None });
            }
            check_unique(txn, *collection, *id, fields)?;
            collection.sort_keys(fields)?;
            let record = encode(1, fields)?;
            docs.insert(*id, record.as_slice()).map_err(storage_error)?;
            add_to_indexes(txn, *collection, *id, fields)?;
            Ok(Done::Version(1))
        }
        Op::Replace { collection, id, expected, fields } => {
            let name = docs_table(*collection);
            let mut docs = txn.open_table(name.as_def()).map_err(storage_error)?;
            let old = match docs.get(*id).map_err(storage_error)? {
                Some(record) => decode(*id, record.value())?,
                None => return Err(StoreError::NotFound),
            };
            if old.version != *expected {
                return Err(StoreError::Conflict);
            }
            check_unique(txn, *collection, *id, fields)?;
            collection.sort_keys(fields)?;
            let version = old.version + 1;
            let record = encode(version, fields)?;
            docs.insert(*id, record.as_slice()).map_err(storage_error)?;
            remove_from_indexes(txn, *collection, *id, &old.fields)?;
            add_to_indexes(txn, *collection, *id, fields)?;
            Ok(Done::Version(version))
        }
        Op::Delete { collection, id } => {
            let name = docs_table(*collection);
            let mut docs = txn.open_table(name.as_def()).map_err(storage_error)?;
            // Decoded before it is removed: a record that does not decode is refused untouched.
            let old = match docs.get(*id).map_err(storage_error)? {
                Some(record) => decode(*id, record.value())?,
                None => return Ok(Done::Existed(false)),
            };
            docs.remove(*id).map_err(storage_error)?;
            remove_from_indexes(txn, *collection, *id, &old.fields)?;
            Ok(Done::Existed(true))
        }
        Op::Prepare { collection } => {
            fill_sorted(txn, *collection)?;
            Ok(Done::Existed(true))
        }
    }
}

/// Fills each sorted index of `collection` from its documents unless it was filled for the
/// fields it has now (a new index, or one whose fields changed).
fn fill_sorted(txn: &WriteTransaction, collection: Collection) -> Result<(), StoreError> {
    let mut filled = txn.open_table(SORTED_FILLED).map_err(storage_error)?;
    for index in collection.sorted {
        let marker = format!("{}/{}", collection.name, index.name);
        let fields = index.fields.join(",");
        if filled.get(marker.as_str()).map_err(storage_error)?.is_some_and(|done| done.value() == fields) {
            continue;
        }
        let name = sorted_table(collection, index);
        txn.delete_table(name.as_sorted()).map_err(storage_error)?;
        let mut table = txn.open_table(name.as_sorted()).map_err(storage_error)?;
        let docs_name = docs_table(collection);
        let docs = txn.open_table(docs_name.as_def()).map_err(storage_error)?;
        let mut added = 0_u64;
        for entry in docs.iter().map_err(storage_error)? {
            let (id, record) = entry.map_err(storage_error)?;
            let doc = decode(id.value(), record.value())?;
            // A document stored before the index existed may hold a value it does not order: it
            // stays out of the index, as a write of it now would be refused.
            if let Ok(Some(key)) = sort_key(index, doc.id, &doc.fields) {
                table.insert(key.as_slice(), ()).map_err(storage_error)?;
                added += 1;
            }
        }
        filled.insert(marker.as_str(), fields.as_str()).map_err(storage_error)?;
        tracing::info!(
            collection = collection.name,
            index = index.name,
            documents = added,
            "sorted index filled"
        );
    }
    Ok(())
}

/// Refuses `fields` when a unique value is held by another document than `id`.
fn check_unique(
    txn: &WriteTransaction,
    collection: Collection,
    id: u64,
    fields: &Fields,
) -> Result<(), StoreError> {
    for index in collection.indexes.iter().filter(|index| index.unique) {
        let Some(key) = index_key(fields, index.field) else { continue };
        let name = index_table(collection, index.field, true);
        let table = txn.open_table(name.as_unique()).map_err(storage_error)?;
        if let Some(holder) = table.get(key.as_str()).map_err(storage_error)?
            && holder.value() != id
        {
            return Err(StoreError::AlreadyExists { index: Some(index.field.to_owned()) });
        }
    }
    Ok(())
}

fn add_to_indexes(
    txn: &WriteTransaction,
    collection: Collection,
    id: u64,
    fields: &Fields,
) -> Result<(), StoreError> {
    for index in collection.sorted {
        if let Some(key) = sort_key(index, id, fields)? {
            let name = sorted_table(collection, index);
            txn.open_table(name.as_sorted())
                .map_err(storage_error)?
                .insert(key.as_slice(), ())
                .map_err(storage_error)?;
        }
    }
    for index in collection.indexes {
        let Some(key) = index_key(fields, index.field) else { continue };
        let name = index_table(collection, index.field, index.unique);
        if index.unique {
            txn.open_table(name.as_unique())
                .map_err(storage_error)?
                .insert(key.as_str(), id)
                .map_err(storage_error)?;
        } else {
            txn.open_multimap_table(name.as_lookup())
                .map_err(storage_error)?
                .insert(key.as_str(), id)
                .map_err(storage_error)?;
        }
    }
    Ok(())
}

fn remove_from_indexes(
    txn: &WriteTransaction,
    collection: Collection,
    id: u64,
    fields: &Fields,
) -> Result<(), StoreError> {
    for index in collection.sorted {
        // A stored value no sorted index orders was never in it.
        if let Ok(Some(key)) = sort_key(index, id, fields) {
            let name = sorted_table(collection, index);
            txn.open_table(name.as_sorted())
                .map_err(storage_error)?
                .remove(key.as_slice())
                .map_err(storage_error)?;
        }
    }
    for index in collection.indexes {
        let Some(key) = index_key(fields, index.field) else { continue };
        let name = index_table(collection, index.field, index.unique);
        if index.unique {
            let mut table = txn.open_table(name.as_unique()).map_err(storage_error)?;
            let holder = table.get(key.as_str()).map_err(storage_error)?.map(|holder| holder.value());
            if holder == Some(id) {
                table.remove(key.as_str()).map_err(storage_error)?;
            }
        } else {
            txn.open_multimap_table(name.as_lookup())
                .map_err(storage_error)?
                .remove(key.as_str(), id)
                .map_err(storage_error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, Player};
    use mortar::store::Store;
    use std::io::{BufRead as _, Write as _};

    /// A directory of its own, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("mortar-store-{name}-{}-{n}", std::process::id())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms() {
        let dir = TempDir::new("conformance");
        conformance::run(Arc::new(EmbeddedStore::open(&dir.0).unwrap())).await;
    }

    /// One collection as three versions of a module declare it: no sorted index, one on
    /// `score`, the same index on `(kind, score)`.
    const UNSORTED: Collection = Collection { name: "fill", indexes: &[], sorted: &[] };
    const BY_SCORE: Collection =
        Collection { name: "fill", indexes: &[], sorted: &[SortedIndex::new("top", &["score"])] };
    const BY_KIND: Collection =
        Collection { name: "fill", indexes: &[], sorted: &[SortedIndex::new("top", &["kind", "score"])] };

    /// The ids of `collection`'s first sorted index, in its order.
    async fn sorted_ids_of(store: &EmbeddedStore, collection: Collection) -> Vec<u64> {
        let scan = Scan {
            index: &collection.sorted[0],
            equal: Vec::new(),
            from: Bound::Unbounded,
            to: Bound::Unbounded,
            descending: false,
            after: None,
            limit: 100,
        };
        store.scan(collection, scan).await.unwrap().into_iter().map(|doc| doc.id).collect()
    }

    #[tokio::test]
    async fn a_sorted_index_declared_late_is_filled_from_the_documents() {
        let dir = TempDir::new("fill");
        let store = EmbeddedStore::open(&dir.0).unwrap();
        let raw = |kind: u64, score: i64| match serde_json::json!({ "kind": kind, "score": score }) {
            serde_json::Value::Object(fields) => fields,
            _ => unreachable!(),
        };
        for (id, kind, score) in [(1, 2, 30), (2, 1, 10), (3, 1, 20)] {
            store.insert(UNSORTED, id, raw(kind, score)).await.unwrap();
        }
        assert_eq!(sorted_ids_of(&store, BY_SCORE).await, [2, 3, 1], "filled before the first read");
        store.insert(BY_SCORE, 4, raw(0, 0)).await.unwrap();
        assert_eq!(sorted_ids_of(&store, BY_SCORE).await, [4, 2, 3, 1]);
        drop(store);
        // The same index on other fields, in the next run: filled again for them.
        let store = EmbeddedStore::open(&dir.0).unwrap();
        assert_eq!(sorted_ids_of(&store, BY_KIND).await, [4, 2, 3, 1]);
        store.insert(BY_KIND, 5, raw(1, 15)).await.unwrap();
        assert_eq!(sorted_ids_of(&store, BY_KIND).await, [4, 2, 5, 3, 1]);
    }

    #[tokio::test]
    async fn data_survives_reopening_and_a_second_open_is_refused() {
        let dir = TempDir::new("reopen");
        {
            let store = Store::<Player>::new(Arc::new(EmbeddedStore::open(&dir.0).unwrap()));
            store.insert(1, Player { name: Some("ann".into()), guild: 1, coins: 5 }).await.unwrap();
            let error = EmbeddedStore::open(&dir.0).err().expect("the file is held");
            assert!(error.to_string().contains(&dir.0.display().to_string()), "{error}");
        }
        // The writer thread lets go of the file once the last handle is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            match EmbeddedStore::open(&dir.0) {
                Ok(store) => break Store::<Player>::new(Arc::new(store)),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(error) => panic!("{error}"),
            }
        };
        let player = store.get(1).await.unwrap();
        assert_eq!((player.version, player.doc.coins), (1, 5));
        assert_eq!(store.find_one("name", "ann").await.unwrap().map(|p| p.id), Some(1));
    }

    /// A delete of a record that does not decode is refused and leaves it (and its index
    /// entries) where it is: it used to remove the record first and fail after.
    #[tokio::test]
    async fn a_record_that_does_not_decode_is_not_deleted() {
        let dir = TempDir::new("corrupt-delete");
        let player = || Player { name: Some("ann".into()), guild: 1, coins: 5 };
        Store::<Player>::new(Arc::new(EmbeddedStore::open(&dir.0).unwrap()))
            .insert(1, player())
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match Database::create(dir.0.join(FILE_NAME)) {
                Ok(db) => break db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(error) => panic!("{error}"),
            }
        };
        let txn = db.begin_write().unwrap();
        let name = docs_table(Collection::of::<Player>());
        txn.open_table(name.as_def()).unwrap().insert(1, [FORMAT + 1, 0, 0].as_slice()).unwrap();
        txn.commit().unwrap();
        drop(db);
        let store = Store::<Player>::new(Arc::new(EmbeddedStore::open(&dir.0).unwrap()));
        assert!(matches!(store.delete(1).await, Err(StoreError::Internal(_))));
        assert!(matches!(store.get(1).await, Err(StoreError::Internal(_))), "still there, still unreadable");
        let indexed = store.find_one("name", "ann").await;
        assert!(matches!(indexed, Err(StoreError::Internal(_))), "its index entry still leads to it");
    }

    #[test]
    fn records_of_another_format_are_refused() {
        let mut record = encode(3, &Fields::new()).unwrap();
        assert_eq!(decode(9, &record).unwrap().version, 3);
        record[0] = FORMAT + 1;
        assert!(matches!(decode(9, &record), Err(StoreError::Internal(why)) if why.contains("format")));
        assert!(decode(9, &record[..4]).is_err());
    }

    /// Not a test on its own: the child process of the test below. It writes documents 1, 2, 3…
    /// until killed, printing each id once its insert was acknowledged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "the child process of kill_9_loses_no_acknowledged_write, run by it"]
    async fn kill_child_writer() {
        let Some(dir) = std::env::var_os("MORTAR_STORE_KILL_DIR") else { return };
        let store = Store::<Player>::new(Arc::new(EmbeddedStore::open(Path::new(&dir)).unwrap()));
        // Eight writers at once, so commits carry several writes.
        let (acked, mut acks) = tokio::sync::mpsc::unbounded_channel();
        for writer in 0..8u64 {
            let (store, acked) = (store.clone(), acked.clone());
            tokio::spawn(async move {
                for n in 0u64.. {
                    let id = n * 8 + writer + 1;
                    let doc = Player { name: Some(format!("p{id}")), guild: writer, coins: id };
                    store.insert(id, doc).await.unwrap();
                    let _ = acked.send(id);
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(id) = acks.recv().await {
            writeln!(out, "{id}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn kill_9_loses_no_acknowledged_write() {
        let dir = TempDir::new("kill");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "storage::embedded::tests::kill_child_writer", "--ignored", "--nocapture"])
            .env("MORTAR_STORE_KILL_DIR", &dir.0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(id) = line.unwrap().trim().parse::<u64>() else { continue };
            acked.push(id);
            if acked.len() == 2_000 {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(acked.len(), 2_000, "the child wrote");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Store::<Player>::new(Arc::new(EmbeddedStore::open(&dir.0).unwrap()));
            for id in &acked {
                let player =
                    store.get(*id).await.unwrap_or_else(|e| panic!("acknowledged write {id} lost: {e}"));
                assert_eq!(player.doc.coins, *id);
            }
            // Whatever made it in beyond the acknowledged ones is whole: every index entry points
            // at a document, and every document is in its indexes.
            let count = store.count().await.unwrap();
            assert!(count >= acked.len() as u64);
            let by_guild: u64 = futures::future::join_all((0..8).map(|g| store.count_where("guild", g)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .sum();
            assert_eq!(by_guild, count);
        });
    }
}
