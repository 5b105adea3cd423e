//! Game config tables: rows of a JSON file under the node's tables folder (`tables.path`,
//! default `conf/tables/`), typed in Rust, validated when loaded, replaced whole on a reload.
//!
//! ```
//! use mortar::{Code, Ctx};
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
//! Each node loads every table its modules declare when it starts, and again on `SIGHUP` or when
//! a file changes: each file is read, every row decoded (unknown fields refused when the type
//! says `deny_unknown_fields`), ids checked for duplicates, each row's `check` run, each
//! reference to another table (`refs`) checked against that table as it will be after the
//! reload, and only when every table passed are they all replaced at once. A file that is missing
//! gives the table its `default` (the module's own, built in) or, without one, stops the load. A
//! table that fails keeps its old rows and the node says why: the file, the row (counted from 1)
//! and the reason.
//!
//! The rows belong to the node: two nodes in one process (as in tests) each read their own
//! folder. A handler's [`Rows`] is a snapshot: a reload never changes rows under a running
//! request.

use serde::de::DeserializeOwned;
use std::{collections::HashMap, sync::Arc};

pub use mortar_abi::table::{Decoded, Loaded, Reference, TableDecl, TableError, registered};

/// A table's row type, as [`table!`](crate::table!) declares it.
pub trait Row: DeserializeOwned + Send + Sync + 'static {
    /// The file's name without `.json`.
    const FILE: &'static str;

    /// The row's id, unique within its table.
    fn id(&self) -> u64;

    /// Checks one row beyond its type (a row's references to other tables are checked by the
    /// node: `refs` in [`table!`](crate::table!)); the reason goes into the load error.
    ///
    /// # Errors
    /// Why the row is refused.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The rows of a table, by id; a snapshot that a reload does not change.
pub struct Rows<T> {
    rows: Vec<T>,
    by_id: HashMap<u64, usize>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Self { rows: Vec::new(), by_id: HashMap::new() }
    }
}

impl<T: Row> Rows<T> {
    /// The row with id `id`.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.by_id.get(&id).map(|&at| &self.rows[at])
    }

    /// The row whose id field is `id`: a string id (`"duel"`) or an integer, as [`RowId`] maps
    /// it to the row's id.
    pub fn find<I: RowId + ?Sized>(&self, id: &I) -> Option<&T> {
        self.get(id.row_id())
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
}

/// What a row's id field may be (`id = field` in [`table!`](crate::table!)): an integer, whose
/// value is the row's id, or a string, whose row id is its [`stable_id`](crate::store::stable_id).
pub trait RowId {
    /// The row id.
    fn row_id(&self) -> u64;
}

macro_rules! integer_row_ids {
    ($($int:ty),*) => {
        $(impl RowId for $int {
            fn row_id(&self) -> u64 {
                *self as u64
            }
        })*
    };
}

integer_row_ids!(u8, u16, u32, u64, usize, i32, i64);

impl RowId for str {
    fn row_id(&self) -> u64 {
        crate::store::stable_id(&[self.as_bytes()])
    }
}

impl RowId for String {
    fn row_id(&self) -> u64 {
        self.as_str().row_id()
    }
}

/// Decodes `text` (the file `file`) as rows `T`: ids unique, each row's `check` passed, and the
/// references `refs` collected for the node to check.
///
/// # Errors
/// The first row refused (or the file, when it is not a JSON array).
pub fn decode<T: Row>(file: &str, text: &str, refs: &[RefField<T>]) -> Result<Decoded, TableError> {
    let error = |row: Option<usize>, reason: String| TableError { file: file.to_owned(), row, reason };
    let values: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| error(None, format!("not a JSON array of rows: {e}")))?;
    let mut rows = Vec::with_capacity(values.len());
    let mut by_id = HashMap::with_capacity(values.len());
    let mut references = Vec::new();
    for (at, value) in values.into_iter().enumerate() {
        let row = T::deserialize(value).map_err(|e| error(Some(at + 1), e.to_string()))?;
        if let Some(first) = by_id.insert(row.id(), at) {
            return Err(error(Some(at + 1), format!("id {} is also the id of row {}", row.id(), first + 1)));
        }
        row.check().map_err(|reason| error(Some(at + 1), reason))?;
        for &(field, table, id) in refs {
            references.push(Reference { row: at + 1, field, table, id: id(&row) });
        }
        rows.push(row);
    }
    let ids = by_id.keys().copied().collect();
    Ok(Decoded { rows: Arc::new(Rows { rows, by_id }), ids, references })
}

/// A field of rows `T` naming another table's rows: its name, the table, and how to read it.
#[doc(hidden)]
pub type RefField<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Declares a game config table of row type `T` (see the [module docs](self)):
///
/// `mortar::table!(Item, file = "items", id = id);` — rows from `items.json`, whose field `id`
/// (an integer, or a string: see [`RowId`]; [`Rows::find`] looks a row up by it) is the row's id. Optional, in this order: `default = "…"` (the rows to use when
/// the file is missing, e.g. `include_str!("../tables/items.json")`), `check = f`, a
/// `fn(&T) -> Result<(), String>` run on every row, and `refs = [item_id => "items", …]`:
/// integer fields naming rows of other tables, which the node checks exist (also across module
/// crates and libraries: it asks the other table).
#[macro_export]
macro_rules! table {
    ($row:ty, file = $file:literal, id = $id:ident $(, default = $default:expr)? $(, check = $check:path)? $(, refs = [$($field:ident => $table:literal),* $(,)?])? $(,)?) => {
        const _: () = {
            impl $crate::table::Row for $row {
                const FILE: &'static str = $file;
                fn id(&self) -> u64 {
                    $crate::table::RowId::row_id(&self.$id)
                }
                $(
                    fn check(&self) -> ::std::result::Result<(), ::std::string::String> {
                        $check(self)
                    }
                )?
            }
            $crate::inventory::submit! {
                $crate::table::TableDecl {
                    file: $file,
                    default: $crate::table!(@default $($default)?),
                    decode: |file, text| $crate::table::decode::<$row>(
                        file,
                        text,
                        &[$($((stringify!($field), $table, |row: &$row| row.$field as u64)),*)?],
                    ),
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
    use std::collections::HashSet;

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
    fn a_file_is_decoded_and_checked_row_by_row() {
        let rows = |text| {
            decode::<Thing>("things.json", text, &[("max", "maxima", |thing: &Thing| u64::from(thing.max))])
        };
        let decoded = rows(r#"[{"id": 1, "max": 5}, {"id": 2, "max": 9}]"#).unwrap();
        let loaded = decoded.rows.downcast::<Rows<Thing>>().unwrap();
        assert_eq!((loaded.len(), loaded.get(2).map(|t| t.max)), (2, Some(9)));
        assert_eq!(decoded.ids, HashSet::from([1, 2]));
        assert_eq!(decoded.references[1], Reference { row: 2, field: "max", table: "maxima", id: 9 });

        let unknown = rows(r#"[{"id": 1, "max": 5}, {"id": 3, "colour": 1}]"#).err().unwrap();
        assert_eq!((unknown.row, unknown.file.as_str()), (Some(2), "things.json"));
        assert!(unknown.reason.contains("unknown field `colour`"), "{unknown}");
        let twice = rows(r#"[{"id": 4, "max": 1}, {"id": 4, "max": 2}]"#).err().unwrap();
        assert_eq!(twice.to_string(), "things.json row 2: id 4 is also the id of row 1");
        let checked = rows(r#"[{"id": 1, "max": 0}]"#).err().unwrap();
        assert_eq!(checked.to_string(), "things.json row 1: max must be at least 1");
        assert!(rows("{}").err().unwrap().reason.starts_with("not a JSON array"));
    }

    #[derive(serde::Deserialize)]
    struct Mode {
        id: String,
    }

    crate::table!(Mode, file = "modes", id = id);

    #[test]
    fn a_string_id_is_found_by_its_name() {
        let decoded = decode::<Mode>("modes.json", r#"[{"id": "duel"}, {"id": "squad"}]"#, &[]).unwrap();
        let loaded = decoded.rows.downcast::<Rows<Mode>>().unwrap();
        assert_eq!(loaded.find("squad").map(|mode| mode.id.as_str()), Some("squad"));
        assert!(loaded.find("chess").is_none());
        assert_eq!("duel".row_id(), crate::store::stable_id(&[b"duel"]));
        assert_eq!(loaded.find(&7u32).map(|mode| mode.id.as_str()), None);
    }
}
