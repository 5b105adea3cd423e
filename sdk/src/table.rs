//! Game config tables: rows of a JSON file under the node's tables folder (`tables.path`,
//! default `conf/tables/`), typed in Rust, validated when loaded, replaced whole on a reload.
//!
//! ```
//! use mortar::{Code, Ctx, table::Table};
//!
//! /// One row of `items.json`: `[{"id": 1, "name": "Potion", "max_stack": 99}, …]`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Item {
//!     pub id: u32,
//!     pub name: String,
//!     pub max_stack: u32,
//! }
//!
//! mortar::table!(Item, file = "items", id = id, default = r#"[{"id": 1, "name": "Potion", "max_stack": 99}]"#);
//!
//! async fn max_stack(ctx: &Ctx, item: u32) -> Result<u32, Code> {
//!     ctx.table::<Item>().get(u64::from(item)).map(|item| item.max_stack).ok_or(Code::BAD_REQUEST)
//! }
//! ```
//!
//! A node loads every table its modules declare when it starts, and again on `SIGHUP` or when a
//! file changes: each file is read, every row decoded (unknown fields refused when the type says
//! `deny_unknown_fields`), ids checked for duplicates, each row's `check` run (it may look at other
//! tables, as they will be after the reload: [`Table::pending`]), and only when every table passed
//! are they all replaced at once. A file that is missing gives the table its `default` (the
//! module's own, built in) or, without one, stops the load. A table that fails keeps its old rows
//! and the node says why: the file, the row (counted from 1) and the reason.
//!
//! A handler's [`Rows`] is a snapshot: a reload never changes rows under a running request.

use serde::de::DeserializeOwned;
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

/// A table's row type, as [`table!`](crate::table!) declares it.
pub trait Row: DeserializeOwned + Send + Sync + 'static {
    /// The file's name without `.json`.
    const FILE: &'static str;

    /// The row's id, unique within its table.
    fn id(&self) -> u64;

    /// Checks one row beyond its type, e.g. that it names items that exist
    /// (`Item::table().pending()`); the reason goes into the load error.
    ///
    /// # Errors
    /// Why the row is refused.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The table of this row type.
    fn table() -> &'static Table<Self>;
}

/// Why a table could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// The file, as the node read it.
    pub file: String,
    /// The row, counted from 1; none for the file as a whole.
    pub row: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.row {
            Some(row) => write!(f, "{} row {row}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for TableError {}

/// The rows of a table, by id; a snapshot that a reload does not change.
pub struct Rows<T> {
    rows: Vec<T>,
    by_id: HashMap<u64, usize>,
}

impl<T: Row> Rows<T> {
    /// The row with id `id`.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.by_id.get(&id).map(|&at| &self.rows[at])
    }

    /// Whether a row has id `id`.
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Every row, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.rows.iter()
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn empty() -> Self {
        Self { rows: Vec::new(), by_id: HashMap::new() }
    }
}

/// Where a table's rows live: the loaded ones, and during a load the ones being checked.
pub struct Table<T> {
    current: RwLock<Option<Arc<Rows<T>>>>,
    staged: Mutex<Option<Arc<Rows<T>>>>,
}

impl<T: Row> Table<T> {
    /// An empty table (until the node loads it).
    #[doc(hidden)]
    pub const fn new() -> Self {
        Self { current: RwLock::new(None), staged: Mutex::new(None) }
    }

    /// The loaded rows.
    pub fn rows(&self) -> Arc<Rows<T>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| Arc::new(Rows::empty()))
    }

    /// The rows as they will be once the load in progress succeeds (the loaded rows when none
    /// is in progress): what a row's `check` looks at in another table.
    pub fn pending(&self) -> Arc<Rows<T>> {
        match self.staged.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            Some(staged) => staged,
            None => self.rows(),
        }
    }

    /// Decodes `text` (the file `file`) as this table's rows and keeps them aside; how many.
    #[doc(hidden)]
    pub fn stage(&self, file: &str, text: &str) -> Result<usize, TableError> {
        let error = |row: Option<usize>, reason: String| TableError { file: file.to_owned(), row, reason };
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| error(None, format!("not a JSON array of rows: {e}")))?;
        let mut rows = Vec::with_capacity(values.len());
        let mut by_id = HashMap::with_capacity(values.len());
        for (at, value) in values.into_iter().enumerate() {
            let row = T::deserialize(value).map_err(|e| error(Some(at + 1), e.to_string()))?;
            if let Some(first) = by_id.insert(row.id(), at) {
                return Err(error(
                    Some(at + 1),
                    format!("id {} is also the id of row {}", row.id(), first + 1),
                ));
            }
            rows.push(row);
        }
        let count = rows.len();
        *self.staged.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(Rows { rows, by_id }));
        Ok(count)
    }

    /// Runs each staged row's `check`.
    #[doc(hidden)]
    pub fn check_staged(&self, file: &str) -> Result<(), TableError> {
        let staged = self.pending();
        for (at, row) in staged.rows.iter().enumerate() {
            row.check().map_err(|reason| TableError { file: file.to_owned(), row: Some(at + 1), reason })?;
        }
        Ok(())
    }

    /// Makes the staged rows the loaded ones.
    #[doc(hidden)]
    pub fn commit(&self) {
        if let Some(staged) = self.staged.lock().unwrap_or_else(PoisonError::into_inner).take() {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(staged);
        }
    }

    /// Forgets the staged rows.
    #[doc(hidden)]
    pub fn discard(&self) {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Whether the pending rows (see [`Table::pending`]) have id `id`.
    #[doc(hidden)]
    pub fn pending_contains(&self, id: u64) -> bool {
        self.pending().contains(id)
    }

    /// The references `field_ids` finds in each pending row.
    #[doc(hidden)]
    pub fn pending_references(&self, field_ids: &[RefField<T>]) -> Vec<Reference> {
        let pending = self.pending();
        let mut found = Vec::new();
        for (at, row) in pending.rows.iter().enumerate() {
            for &(field, table, id) in field_ids {
                found.push(Reference { row: at + 1, field, table, id: id(row) });
            }
        }
        found
    }
}

/// A field of rows `T` naming another table's rows: its name, the table, and how to read it.
#[doc(hidden)]
pub type RefField<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A row's field naming a row of another table (`refs = [item_id => "items"]`), which the node
/// checks exists when it loads the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The row, counted from 1.
    pub row: usize,
    /// The field.
    pub field: &'static str,
    /// The table it names (its file without `.json`).
    pub table: &'static str,
    /// The id it holds.
    pub id: u64,
}

impl<T: Row> Default for Table<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A table as [`table!`](crate::table!) registers it, for the node to load.
#[derive(Debug)]
pub struct TableDecl {
    /// The file's name without `.json`.
    pub file: &'static str,
    /// The rows used when the node's tables folder has no such file.
    pub default: Option<&'static str>,
    /// Decodes a file's text (the name given for errors) and keeps the rows aside; how many.
    pub stage: fn(&str, &str) -> Result<usize, TableError>,
    /// Checks every staged row (the name given for errors).
    pub check: fn(&str) -> Result<(), TableError>,
    /// Makes the staged rows the loaded ones.
    pub commit: fn(),
    /// Forgets the staged rows.
    pub discard: fn(),
    /// Whether the pending rows have an id: how another table's references to this one are
    /// checked.
    pub contains: fn(u64) -> bool,
    /// The references of the pending rows to other tables.
    pub references: fn() -> Vec<Reference>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(TableDecl);

/// Every table linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static TableDecl> {
    inventory::iter::<TableDecl>.into_iter()
}

/// Declares a game config table of row type `T` (see the [module docs](self)):
///
/// `mortar::table!(Item, file = "items", id = id);` — rows from `items.json`, whose field `id`
/// (an integer) is the row's id. Optional, in this order: `default = "…"` (the rows to use when
/// the file is missing, e.g. `include_str!("../tables/items.json")`), `check = f`, a
/// `fn(&T) -> Result<(), String>` run on every row, and `refs = [item_id => "items", …]`:
/// integer fields naming rows of other tables, which the node checks exist (also across module
/// crates and libraries: it asks the other table).
#[macro_export]
macro_rules! table {
    ($row:ty, file = $file:literal, id = $id:ident $(, default = $default:expr)? $(, check = $check:path)? $(, refs = [$($field:ident => $table:literal),* $(,)?])? $(,)?) => {
        const _: () = {
            static TABLE: $crate::table::Table<$row> = $crate::table::Table::new();
            impl $crate::table::Row for $row {
                const FILE: &'static str = $file;
                fn id(&self) -> u64 {
                    self.$id as u64
                }
                $(
                    fn check(&self) -> ::std::result::Result<(), ::std::string::String> {
                        $check(self)
                    }
                )?
                fn table() -> &'static $crate::table::Table<Self> {
                    &TABLE
                }
            }
            $crate::inventory::submit! {
                $crate::table::TableDecl {
                    file: $file,
                    default: $crate::table!(@default $($default)?),
                    stage: |file, text| TABLE.stage(file, text),
                    check: |file| TABLE.check_staged(file),
                    commit: || TABLE.commit(),
                    discard: || TABLE.discard(),
                    contains: |id| TABLE.pending_contains(id),
                    references: || TABLE.pending_references(&[$($((stringify!($field), $table, |row: &$row| row.$field as u64)),*)?]),
                    defined_at: module_path!(),
                }
            }
        };
    };
    (@default) => { None };
    (@default $default:expr) => { Some($default) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Thing {
        id: u32,
        max: u32,
    }

    fn no_zero(thing: &Thing) -> Result<(), String> {
        if thing.max == 0 { Err("max must be at least 1".into()) } else { Ok(()) }
    }

    crate::table!(Thing, file = "things", id = id, check = no_zero);

    #[test]
    fn a_load_is_checked_row_by_row_and_replaces_the_rows_only_when_committed() {
        let table = Thing::table();
        assert!(table.rows().is_empty());
        assert_eq!(table.stage("things.json", r#"[{"id": 1, "max": 5}, {"id": 2, "max": 9}]"#), Ok(2));
        table.check_staged("things.json").unwrap();
        assert!(table.rows().is_empty(), "staged rows are not loaded yet");
        assert_eq!(table.pending().get(2).map(|t| t.max), Some(9));
        table.commit();
        assert_eq!(table.rows().get(1).map(|t| t.max), Some(5));

        let unknown =
            table.stage("things.json", r#"[{"id": 1, "max": 5}, {"id": 3, "colour": 1}]"#).unwrap_err();
        assert_eq!((unknown.row, unknown.file.as_str()), (Some(2), "things.json"));
        assert!(unknown.reason.contains("unknown field `colour`"), "{unknown}");
        let twice = table.stage("things.json", r#"[{"id": 4, "max": 1}, {"id": 4, "max": 2}]"#).unwrap_err();
        assert_eq!(twice.to_string(), "things.json row 2: id 4 is also the id of row 1");
        table.stage("things.json", r#"[{"id": 1, "max": 0}]"#).unwrap();
        let checked = table.check_staged("things.json").unwrap_err();
        assert_eq!(checked.to_string(), "things.json row 1: max must be at least 1");
        table.discard();
        assert_eq!(table.rows().len(), 2, "a refused load keeps the old rows");
        assert!(table.stage("things.json", "{}").unwrap_err().reason.starts_with("not a JSON array"));
    }
}
