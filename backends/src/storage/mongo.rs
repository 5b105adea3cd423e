//! The MongoDB store (`storage.url = "mongodb://…/DATABASE"`), for clusters whose workers share
//! their players' data.
//!
//! Layout: one collection per document type, named by its declared collection name, in the
//! database the URI names; the document id is `_id` (an integer), the version a top-level integer
//! field `version`; the other fields as serde writes them. Each declared index is a MongoDB index
//! on its field (unique ones `unique: true`, with a partial filter so that documents where the
//! field is missing or `null` are not indexed, as in the embedded store), created when the node
//! starts for every type declared with `#[derive(mortar::Document)]` (and before the first use of
//! a collection whose type implements `Document` by hand).
//!
//! Compare-and-set is one `findOneAndUpdate` filtered on `{_id, version}`; a duplicate key
//! (error 11000) is `ALREADY_EXISTS`. Writes use the URI's write concern (add `w=majority&
//! journal=true` for replicated, journaled acknowledgements). The client is pooled; server
//! selection and connecting are bounded by `storage.timeout_ms`, and a server that cannot be
//! reached at start stops the node with a clear error.

use mongodb::{
    Client, Database, IndexModel,
    bson::{Bson, Document, doc},
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use mortar_abi::{
    future::BoxFuture,
    store::{Collection, Fields, RawDoc, Scan, StoreBackend, StoreError},
};
use std::ops::Bound;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// The MongoDB store; cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    /// Whether the server keeps `_id` in a compound index: a sorted index ends with it, so a page
    /// sorted by its fields and then the id reads the index in order. (nx-27017 refuses every
    /// write to a collection with such an index; its sorted indexes then stop at their fields.)
    id_in_index: bool,
    /// Collections whose indexes this node has created.
    ready: Mutex<HashSet<&'static str>>,
}

impl MongoStore {
    /// Connects to the server of `uri` and checks it answers, within `timeout`.
    ///
    /// # Errors
    /// A URI that does not parse or names no database, or a server that does not answer.
    pub async fn connect(uri: &str, timeout: Duration) -> Result<Self, String> {
        let mut options = ClientOptions::parse(uri).await.map_err(|error| format!("storage.url: {error}"))?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name.get_or_insert_with(|| "mortar".into());
        let client = Client::with_options(options).map_err(|error| error.to_string())?;
        let db = client
            .default_database()
            .ok_or_else(|| "storage.url names no database: end it with /DATABASE".to_owned())?;
        tokio::time::timeout(timeout * 2, db.run_command(doc! { "ping": 1 }))
            .await
            .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
            .map_err(|error| format!("the server does not answer: {error}"))?;
        let id_in_index = id_in_compound_index(&db).await;
        if !id_in_index {
            tracing::warn!(
                "this MongoDB server cannot keep `_id` in a compound index: sorted indexes stop at their own fields, and pages sort equal keys by id in memory"
            );
        }
        let store = Self { shared: Arc::new(Shared { db, id_in_index, ready: Mutex::default() }) };
        // Indexes of every declared document type exist before the node serves.
        for collection in mortar_abi::store::declared() {
            store
                .collection(collection)
                .await
                .map_err(|error| format!("collection `{}`: {error}", collection.name))?;
        }
        Ok(store)
    }

    /// The collection, with its indexes created on first use.
    async fn collection(&self, collection: Collection) -> Result<mongodb::Collection<Document>, StoreError> {
        let coll = self.shared.db.collection::<Document>(collection.name);
        let ready =
            self.shared.ready.lock().unwrap_or_else(PoisonError::into_inner).contains(collection.name);
        if !ready {
            for index in collection.indexes {
                let mut options = IndexOptions::builder().unique(index.unique).build();
                if index.unique {
                    // Missing and null values are not indexed, so they never clash.
                    options.partial_filter_expression = Some(doc! { index.field: { "$type": [
                        "string", "number", "bool", "object", "array", "date", "objectId", "binData"
                    ] } });
                }
                let model = IndexModel::builder().keys(doc! { index.field: 1 }).options(options).build();
                coll.create_index(model).await.map_err(unavailable)?;
            }
            for index in collection.sorted {
                let mut keys = Document::new();
                for field in index.fields {
                    keys.insert(*field, 1);
                }
                if self.shared.id_in_index {
                    keys.insert("_id", 1);
                }
                let options = IndexOptions::builder().name(format!("sorted_{}", index.name)).build();
                let model = IndexModel::builder().keys(keys).options(options).build();
                coll.create_index(model).await.map_err(unavailable)?;
            }
            self.shared.ready.lock().unwrap_or_else(PoisonError::into_inner).insert(collection.name);
        }
        Ok(coll)
    }

    /// Which id (`check_id`) or unique field of `fields` is taken, after a write was refused.
    async fn clash(
        &self,
        coll: &mongodb::Collection<Document>,
        collection: Collection,
        id: u64,
        fields: &Fields,
        check_id: bool,
    ) -> Option<StoreError> {
        if check_id && let Ok(Some(_)) = coll.find_one(doc! { "_id": to_i64(id) }).await {
            return Some(StoreError::AlreadyExists { index: None });
        }
        for index in collection.indexes.iter().filter(|index| index.unique) {
            let Some(value) = fields.get(index.field).filter(|value| !value.is_null()) else { continue };
            let Ok(value) = mongodb::bson::serialize_to_bson(value) else { continue };
            let holder = coll.find_one(doc! { index.field: value, "_id": { "$ne": to_i64(id) } }).await;
            if let Ok(Some(_)) = holder {
                return Some(StoreError::AlreadyExists { index: Some(index.field.to_owned()) });
            }
        }
        None
    }
}

/// Whether a document can be written to a collection with an index on `(field, _id)`: tried on a
/// scratch collection, dropped after.
async fn id_in_compound_index(db: &Database) -> bool {
    let scratch = db.collection::<Document>("mortar_probe_compound_id");
    let model = IndexModel::builder().keys(doc! { "k": 1, "_id": 1 }).build();
    let works = match scratch.create_index(model).await {
        Ok(_) => scratch.insert_one(doc! { "_id": 1_i64, "k": 1_i64 }).await.is_ok(),
        Err(_) => false,
    };
    let _ = scratch.drop().await;
    works
}

fn unavailable(error: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == 11000,
        ErrorKind::Command(command) => command.code == 11000,
        _ => error.to_string().contains("E11000"),
    }
}

/// Ids are at most `i64::MAX` (checked by the SDK).
fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// `fields` with `_id` and `version`, as BSON.
fn to_document(id: u64, version: u64, fields: &Fields) -> Result<Document, StoreError> {
    let mut document = Document::new();
    document.insert("_id", to_i64(id));
    document.insert("version", to_i64(version));
    for (name, value) in fields {
        if name == "_id" || name == "version" {
            return Err(StoreError::Internal(format!("a document may not have a field named `{name}`")));
        }
        let value = mongodb::bson::serialize_to_bson(value)
            .map_err(|error| StoreError::Internal(format!("field `{name}`: {error}")))?;
        document.insert(name.clone(), value);
    }
    Ok(document)
}

fn integer(value: Option<&Bson>) -> Option<u64> {
    match value? {
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if n.fract() == 0.0 && *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

fn from_document(mut document: Document) -> Result<RawDoc, StoreError> {
    let id = integer(document.get("_id"))
        .ok_or_else(|| StoreError::Internal("a stored document has no integer _id".into()))?;
    let version = integer(document.get("version"))
        .ok_or_else(|| StoreError::Internal(format!("stored document {id} has no integer version")))?;
    document.remove("_id");
    document.remove("version");
    mongodb::bson::deserialize_from_bson::<Fields>(Bson::Document(document))
        .map(|fields| RawDoc { id, version, fields })
        .map_err(|error| StoreError::Internal(format!("stored document {id} does not read: {error}")))
}

fn bson(value: &serde_json::Value) -> Result<Bson, StoreError> {
    mongodb::bson::serialize_to_bson(value)
        .map_err(|error| StoreError::Internal(format!("query value: {error}")))
}

/// The `$type` alias of a sortable value.
fn bson_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::String(_) => "string",
        serde_json::Value::Bool(_) => "bool",
        _ => "number",
    }
}

/// The filter of a sorted index's `scan`: its equal fields, its range, the documents it has
/// (every field set), and past its cursor when `with_cursor`.
fn scan_filter(scan: &Scan, with_cursor: bool) -> Result<Document, StoreError> {
    let mut and = Vec::new();
    for field in scan.index.fields {
        and.push(doc! { *field: { "$ne": Bson::Null } });
    }
    for (field, value) in scan.index.fields.iter().zip(&scan.equal) {
        and.push(doc! { *field: bson(value)? });
    }
    let rest = scan.rest();
    if let Some(first) = rest.first() {
        let mut range = Document::new();
        match &scan.from {
            Bound::Included(value) => drop(range.insert("$gte", bson(value)?)),
            Bound::Excluded(value) => drop(range.insert("$gt", bson(value)?)),
            Bound::Unbounded => {}
        }
        match &scan.to {
            Bound::Included(value) => drop(range.insert("$lte", bson(value)?)),
            Bound::Excluded(value) => drop(range.insert("$lt", bson(value)?)),
            Bound::Unbounded => {}
        }
        if let Some(kind) = [&scan.from, &scan.to].into_iter().find_map(|bound| match bound {
            Bound::Included(value) | Bound::Excluded(value) => Some(bson_type(value)),
            Bound::Unbounded => None,
        }) {
            // MongoDB keeps a range to its bound's type by itself; said outright for servers
            // that compare across types (nx-27017 stores booleans as 0 and 1).
            range.insert("$type", kind);
            and.push(doc! { *first: range });
        }
    }
    if let (true, Some(after)) = (with_cursor, &scan.after) {
        // (a > x) or (a = x and b > y) or … or (a = x and … and _id > id), `<` when descending.
        let beyond = if scan.descending { "$lt" } else { "$gt" };
        let mut keys: Vec<(&str, Bson)> =
            rest.iter().copied().zip(after.values.iter().map(bson).collect::<Result<Vec<_>, _>>()?).collect();
        keys.push(("_id", Bson::Int64(to_i64(after.id))));
        let mut or = Vec::with_capacity(keys.len());
        for (at, (field, value)) in keys.iter().enumerate() {
            let mut clause = Document::new();
            for (same, value) in &keys[..at] {
                clause.insert(*same, value.clone());
            }
            clause.insert(*field, doc! { beyond: value.clone() });
            or.push(clause);
        }
        and.push(doc! { "$or": or });
    }
    Ok(doc! { "$and": and })
}

fn filter_value(field: &str, value: serde_json::Value) -> Result<Document, StoreError> {
    let value = mongodb::bson::serialize_to_bson(&value)
        .map_err(|error| StoreError::Internal(format!("index value: {error}")))?;
    Ok(doc! { field: value })
}

impl StoreBackend for MongoStore {
    fn get(&self, collection: Collection, id: u64) -> BoxFuture<Result<Option<RawDoc>, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let coll = store.collection(collection).await?;
            coll.find_one(doc! { "_id": to_i64(id) })
                .await
                .map_err(unavailable)?
                .map(from_document)
                .transpose()
        })
    }

    fn insert(&self, collection: Collection, id: u64, fields: Fields) -> BoxFuture<Result<u64, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let coll = store.collection(collection).await?;
            match coll.insert_one(to_document(id, 1, &fields)?).await {
                Ok(_) => Ok(1),
                Err(error) if is_duplicate_key(&error) => Err(store
                    .clash(&coll, collection, id, &fields, true)
                    .await
                    .unwrap_or(StoreError::AlreadyExists { index: None })),
                Err(error) => Err(unavailable(error)),
            }
        })
    }

    fn replace(
        &self,
        collection: Collection,
        id: u64,
        expected: u64,
        fields: Fields,
    ) -> BoxFuture<Result<u64, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let coll = store.collection(collection).await?;
            let mut set = to_document(id, expected + 1, &fields)?;
            set.remove("_id");
            let filter = doc! { "_id": to_i64(id), "version": to_i64(expected) };
            let updated = coll
                .find_one_and_update(filter, doc! { "$set": set })
                .return_document(ReturnDocument::After)
                .await;
            match updated {
                Ok(Some(_)) => Ok(expected + 1),
                Ok(None) => match coll.find_one(doc! { "_id": to_i64(id) }).await.map_err(unavailable)? {
                    None => Err(StoreError::NotFound),
                    Some(current) if integer(current.get("version")) != Some(expected) => {
                        Err(StoreError::Conflict)
                    }
                    // The version matched, yet nothing was written: some servers answer a unique
                    // clash on update this way instead of with error 11000.
                    Some(_) => Err(store
                        .clash(&coll, collection, id, &fields, false)
                        .await
                        .unwrap_or(StoreError::Conflict)),
                },
                Err(error) if is_duplicate_key(&error) => Err(store
                    .clash(&coll, collection, id, &fields, false)
                    .await
                    .unwrap_or(StoreError::AlreadyExists { index: None })),
                Err(error) => Err(unavailable(error)),
            }
        })
    }

    fn delete(&self, collection: Collection, id: u64) -> BoxFuture<Result<bool, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let coll = store.collection(collection).await?;
            let deleted = coll.delete_one(doc! { "_id": to_i64(id) }).await.map_err(unavailable)?;
            Ok(deleted.deleted_count > 0)
        })
    }

    fn find(
        &self,
        collection: Collection,
        field: &'static str,
        value: serde_json::Value,
        limit: usize,
    ) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            use futures::TryStreamExt as _;
            if collection.index(field).is_none() {
                return Err(StoreError::Internal(format!(
                    "`{field}` is not an index of `{}`",
                    collection.name
                )));
            }
            if value.is_null() || limit == 0 {
                return Ok(Vec::new());
            }
            let coll = store.collection(collection).await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let cursor = coll
                .find(filter_value(field, value)?)
                .sort(doc! { "_id": 1 })
                .limit(limit)
                .await
                .map_err(unavailable)?;
            let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
            documents.into_iter().map(from_document).collect()
        })
    }

    fn count(
        &self,
        collection: Collection,
        filter: Option<(&'static str, serde_json::Value)>,
    ) -> BoxFuture<Result<u64, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let filter = match filter {
                None => Document::new(),
                Some((field, _)) if collection.index(field).is_none() => {
                    return Err(StoreError::Internal(format!(
                        "`{field}` is not an index of `{}`",
                        collection.name
                    )));
                }
                Some((_, serde_json::Value::Null)) => return Ok(0),
                Some((field, value)) => filter_value(field, value)?,
            };
            let coll = store.collection(collection).await?;
            coll.count_documents(filter).await.map_err(unavailable)
        })
    }

    fn scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            use futures::TryStreamExt as _;
            let coll = store.collection(collection).await?;
            let direction = if scan.descending { -1 } else { 1 };
            let mut sort = Document::new();
            for field in scan.index.fields {
                sort.insert(*field, direction);
            }
            sort.insert("_id", direction);
            let cursor = coll
                .find(scan_filter(&scan, true)?)
                .sort(sort)
                .limit(i64::try_from(scan.limit).unwrap_or(i64::MAX))
                .await
                .map_err(unavailable)?;
            let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
            documents.into_iter().map(from_document).collect()
        })
    }

    fn count_scan(&self, collection: Collection, scan: Scan) -> BoxFuture<Result<u64, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let coll = store.collection(collection).await?;
            coll.count_documents(scan_filter(&scan, false)?).await.map_err(unavailable)
        })
    }

    fn get_many(&self, collection: Collection, ids: Vec<u64>) -> BoxFuture<Result<Vec<RawDoc>, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            use futures::TryStreamExt as _;
            let coll = store.collection(collection).await?;
            let ids: Vec<i64> = ids.into_iter().map(to_i64).collect();
            let cursor = coll.find(doc! { "_id": { "$in": ids } }).await.map_err(unavailable)?;
            let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
            documents.into_iter().map(from_document).collect()
        })
    }

    fn backoff(&self, attempt: u32) -> BoxFuture<()> {
        super::backoff(attempt)
    }
}
