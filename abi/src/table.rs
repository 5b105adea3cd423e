//! Game config tables as a module declares them (the SDK's `table!` writes the declaration):
//! the decoded rows the host keeps per node, the references it checks, and why a file failed.

use std::{any::Any, collections::HashSet, fmt, sync::Arc};

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

/// A table's rows as the node keeps them: the module's own `Rows` behind `Any` (made and read
/// on the module's side of a library boundary, so its type is the module's own).
pub type Loaded = Arc<dyn Any + Send + Sync>;

/// A table file decoded and its rows checked, for the node to keep once every table passed.
pub struct Decoded {
    /// The rows (a [`Loaded`]).
    pub rows: Loaded,
    /// Every row's id: what other tables' references are checked against.
    pub ids: HashSet<u64>,
    /// The rows' references to other tables.
    pub references: Vec<Reference>,
}

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

/// A table as the SDK's `table!` registers it, for the node to load.
#[derive(Debug)]
pub struct TableDecl {
    /// The file's name without `.json`.
    pub file: &'static str,
    /// The rows used when the node's tables folder has no such file.
    pub default: Option<&'static str>,
    /// Decodes and checks a file's text (the name given for errors); see the SDK's `decode`.
    pub decode: fn(&str, &str) -> Result<Decoded, TableError>,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

inventory::collect!(TableDecl);

/// Every table linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static TableDecl> {
    inventory::iter::<TableDecl>.into_iter()
}
