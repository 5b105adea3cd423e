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
    store::{Collection, Fields, RawDoc, StoreBackend, StoreError},
};
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
        let store = Self { shared: Arc::new(Shared { db, ready: Mutex::default() }) };
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

    fn backoff(&self, attempt: u32) -> BoxFuture<()> {
        super::backoff(attempt)
    }
}
