//! Game config tables: the node loads every table its modules declare (`mortar::table!`) from
//! `tables.path` before the modules start, and again whenever it is asked to.
//!
//! A load (see [`Tables::load`]) stages every table, checks every row of every table, and
//! replaces all of them at once only when none failed; otherwise it keeps every loaded table.
//!
//! The reloader task ([`Tables::watch`]) loads again when:
//! 1. the process gets `SIGHUP`;
//! 2. every `tables.poll_ms`, a table file's size or modification time changed (or it appeared
//!    or went);
//!
//! and logs what it did; it ends when the node shuts down.

use mortar_abi::table::{Decoded, Loaded, TableDecl, TableError};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// Why the tables could not be loaded: every error found, one per table.
#[derive(Debug, thiserror::Error)]
#[error("game config tables refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct TablesError(pub Vec<TableError>);

/// What a file looked like when last read: its size and modification time.
type Stamp = Option<(u64, SystemTime)>;

/// The tables of a node's modules, the folder they are read from and the rows loaded. Cheap to
/// clone.
#[derive(Clone)]
pub struct Tables {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    decls: Vec<&'static TableDecl>,
    /// The loaded rows, by file; replaced whole by a load.
    loaded: RwLock<HashMap<&'static str, Loaded>>,
    /// Each file's stamp at the last load.
    stamps: Mutex<HashMap<&'static str, Stamp>>,
}

impl Tables {
    /// The tables `decls`, read from `dir`.
    pub fn new(dir: PathBuf, decls: impl IntoIterator<Item = &'static TableDecl>) -> Self {
        let decls = decls.into_iter().collect();
        let inner = Inner { dir, decls, loaded: RwLock::default(), stamps: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// Loads every table: each from its file, or its built-in rows when the file is missing.
    /// Returns how many rows each table has, by file.
    ///
    /// # Errors
    /// Every table that failed (a file that cannot be read or decoded, a row refused, a missing
    /// file without built-in rows); then no table changed.
    pub fn load(&self) -> Result<Vec<(&'static str, usize)>, TablesError> {
        // One load at a time (SIGHUP and a changed file at once): the later one wins whole.
        let mut stamps = self.inner.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let mut errors = Vec::new();
        let mut decoded = HashMap::new();
        let mut seen = HashMap::new();
        for decl in &self.inner.decls {
            let path = self.path(decl);
            let shown = path.display().to_string();
            seen.insert(decl.file, stamp(&path));
            let rows = match std::fs::read_to_string(&path) {
                Ok(text) => (decl.decode)(&shown, &text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => match decl.default {
                    Some(text) => {
                        (decl.decode)(&format!("{} (built into {})", decl.file, decl.defined_at), text)
                    }
                    None => Err(TableError {
                        file: shown.clone(),
                        row: None,
                        reason: format!("missing, and {} has no built-in rows", decl.defined_at),
                    }),
                },
                Err(error) => Err(TableError { file: shown.clone(), row: None, reason: error.to_string() }),
            };
            match rows {
                Ok(rows) => {
                    decoded.insert(decl.file, (rows, shown));
                }
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            let tables = self.inner.decls.iter().filter_map(|decl| decoded.get(decl.file));
            errors.extend(tables.filter_map(|(rows, file)| broken_reference(&decoded, rows, file)));
        }
        if !errors.is_empty() {
            return Err(TablesError(errors));
        }
        let counts =
            self.inner.decls.iter().map(|decl| (decl.file, decoded[decl.file].0.ids.len())).collect();
        let loaded = decoded.into_iter().map(|(file, (rows, _))| (file, rows.rows)).collect();
        *self.inner.loaded.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        *stamps = seen;
        Ok(counts)
    }

    /// The rows of table `file` as last loaded.
    pub fn rows(&self, file: &str) -> Option<Loaded> {
        self.inner.loaded.read().unwrap_or_else(PoisonError::into_inner).get(file).cloned()
    }

    /// Whether a table file changed since the last load.
    pub fn changed(&self) -> bool {
        let stamps = self.inner.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.decls.iter().any(|decl| stamps.get(decl.file) != Some(&stamp(&self.path(decl))))
    }

    /// Reloads on `SIGHUP` and, every `poll`, when a file changed, until `stop` is cancelled
    /// (see the module docs). Each outcome is logged.
    pub fn watch(&self, poll: Option<Duration>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tables = self.clone();
        // Registered before the node says it is ready: a SIGHUP right after that must reload,
        // not end the process (the signal's default action).
        let mut hangup = hangup();
        tokio::spawn(async move {
            let mut ticks = poll.map(tokio::time::interval);
            loop {
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = recv(&mut hangup) => "SIGHUP",
                    () = tick(&mut ticks) => {
                        if !tables.changed() {
                            continue;
                        }
                        "a table file changed"
                    }
                };
                match tables.load() {
                    Ok(counts) => tracing::info!(why, tables = ?counts, "game config tables reloaded"),
                    Err(error) => {
                        tracing::error!(why, %error, "game config tables not reloaded: keeping the loaded ones")
                    }
                }
            }
        })
    }

    fn path(&self, decl: &TableDecl) -> PathBuf {
        self.inner.dir.join(format!("{}.json", decl.file))
    }
}

/// The first reference of `rows` (of `file`) to a row that the table it names does not have, in
/// the tables as they are being loaded.
fn broken_reference(
    decoded: &HashMap<&'static str, (Decoded, String)>,
    rows: &Decoded,
    file: &str,
) -> Option<TableError> {
    rows.references.iter().find_map(|reference| {
        let reason = match decoded.get(reference.table) {
            None => format!(
                "{} refers to table `{}`, which no loaded module declares",
                reference.field, reference.table
            ),
            Some((other, _)) if !other.ids.contains(&reference.id) => {
                format!("{} {} is not in {}.json", reference.field, reference.id, reference.table)
            }
            Some(_) => return None,
        };
        Some(TableError { file: file.to_owned(), row: Some(reference.row), reason })
    })
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[cfg(unix)]
fn hangup() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}

async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}
