//! The dynamic-module loader: opens a module library, checks its ABI fingerprint before touching
//! anything else, and keeps it loaded for the rest of the process.
//!
//! This is the one place in mortar with `unsafe` code: opening a library runs its initialisers,
//! and reading its entry point trusts the symbol's type. Both are made sound by the checks each
//! block's `SAFETY` comment names; what module code may do inside a library is in
//! `docs/dynamic-modules.md`.
#![allow(unsafe_code)]

use mortar_abi::dynamic::{Declaration, ENTRY_SYMBOL_PREFIX, FINGERPRINT, LibraryEntry};
use std::path::{Path, PathBuf};

/// Why a module library was refused. Each names the library's path and the reason; nothing of a
/// refused library is used (its initialisers may have run: that is what opening a library means).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// There is no file at the path.
    #[error("dynamic module {}: no such file", .path.display())]
    Missing {
        /// The configured path.
        path: PathBuf,
    },
    /// Something is at the path, but not a file: a directory, a FIFO, a socket, a device.
    #[error("dynamic module {}: is {what}, not a library file", .path.display())]
    NotAFile {
        /// The configured path.
        path: PathBuf,
        /// What it is, e.g. "a directory".
        what: &'static str,
    },
    /// The path cannot be followed or read, e.g. a symlink loop or a directory without access.
    #[error("dynamic module {}: cannot be read: {reason}", .path.display())]
    Unreadable {
        /// The configured path.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// The file exists but is not a library this platform can load.
    #[error("dynamic module {}: cannot be loaded: {reason}", .path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// The dynamic loader's message.
        reason: String,
    },
    /// The library does not export the entry point `export_module!` generates.
    #[error(
        "dynamic module {}: no entry point `{symbol}`: build the crate as a cdylib with `mortar::export_module!();` in its lib.rs, and keep the file name cargo gave it (lib<crate name>{})",
        .path.display(),
        std::env::consts::DLL_SUFFIX
    )]
    NoEntry {
        /// The configured path.
        path: PathBuf,
        /// The symbol looked for.
        symbol: String,
    },
    /// The library was built against another SDK, compiler or target.
    #[error(
        "dynamic module {}: built for another ABI (library: {library}) (node: {node}): rebuild it against this node's SDK with the same rustc and target",
        .path.display()
    )]
    Fingerprint {
        /// The configured path.
        path: PathBuf,
        /// The library's fingerprint (lossy UTF-8).
        library: String,
        /// This node's.
        node: &'static str,
    },
}

/// A loaded module library. Never unloaded: its code and statics stay valid for the process.
pub struct Library {
    path: PathBuf,
    declaration: Declaration,
}

impl Library {
    /// Opens the library at `path` and reads its declaration.
    ///
    /// Steps, each ending the load with its error when it fails:
    /// 1. the path leads (through any symlinks) to a regular file;
    /// 2. the platform's loader opens it (its initialisers run: the library's registries fill);
    /// 3. it exports `mortar_module_entry_v1_<crate>`, the crate being named by the file;
    /// 4. the fingerprint the entry point gives equals this node's, byte for byte;
    /// 5. only then is the declaration read.
    ///
    /// # Errors
    /// See [`LibraryError`].
    pub fn load(path: &Path) -> Result<Self, LibraryError> {
        let path = path.to_owned();
        check_file(&path)?;
        // SAFETY: opening a library runs its initialisers. A mortar module library's are the
        // `inventory` constructors of its own copy of the SDK, which only append to that copy's
        // registries. A library that is not a mortar module is refused below without any of its
        // functions being called; what its initialisers do is the operator's choice of path.
        // Absolute, so the platform's loader opens this file rather than searching its paths.
        let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        let library = unsafe { libloading::Library::new(&absolute) }
            .map_err(|error| LibraryError::Open { path: path.clone(), reason: with_sources(&error) })?;
        let symbol = format!("{ENTRY_SYMBOL_PREFIX}{}", crate_name(&path));
        // SAFETY: a symbol with this name is only made by `mortar::export_module!`, whose
        // function has exactly this type under this name (the `_v1_` in the name; a new
        // signature gets a new name). The function pointer is copied out, and the library is
        // leaked below, so it outlives every use.
        let entry: extern "C" fn() -> &'static LibraryEntry = unsafe {
            *library
                .get::<extern "C" fn() -> &'static LibraryEntry>(symbol.as_bytes())
                .map_err(|_| LibraryError::NoEntry { path: path.clone(), symbol: symbol.clone() })?
        };
        let entry = entry();
        // SAFETY: the entry's first two fields are a pointer to and the length of the library's
        // fingerprint, a `&'static str` of the library; their `#[repr(C)]` layout is fixed for
        // every SDK version under this symbol name.
        let fingerprint = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(entry.fingerprint), entry.fingerprint_len)
        };
        if fingerprint != FINGERPRINT.as_bytes() {
            return Err(LibraryError::Fingerprint {
                path,
                library: String::from_utf8_lossy(fingerprint).into_owned(),
                node: FINGERPRINT,
            });
        }
        // The fingerprints are equal: the same SDK source built by the same compiler for the same
        // target, so the rest of the entry and the declaration are this node's own types.
        let declaration = (entry.declaration)();
        // Never unloaded: routes, modules and futures point into the library's code.
        std::mem::forget(library);
        Ok(Self { path, declaration })
    }

    /// The path the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the library declares.
    pub fn declaration(&self) -> &Declaration {
        &self.declaration
    }
}

/// That `path` leads to a regular file, or what it is instead. (A FIFO would block the loader.)
fn check_file(path: &Path) -> Result<(), LibraryError> {
    use std::os::unix::fs::FileTypeExt as _;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(_) => {
                    LibraryError::Unreadable { path: path.to_owned(), reason: "a symlink to nothing".into() }
                }
                Err(_) => LibraryError::Missing { path: path.to_owned() },
            });
        }
        Err(error) => {
            return Err(LibraryError::Unreadable { path: path.to_owned(), reason: error.to_string() });
        }
    };
    let kind = metadata.file_type();
    let what = match () {
        () if kind.is_file() => return Ok(()),
        () if kind.is_dir() => "a directory",
        () if kind.is_fifo() => "a FIFO",
        () if kind.is_socket() => "a socket",
        () if kind.is_block_device() || kind.is_char_device() => "a device",
        () => "not a regular file",
    };
    Err(LibraryError::NotAFile { path: path.to_owned(), what })
}

/// `error`'s message followed by those of its sources: the dynamic loader's own reason is in
/// the source of libloading's "dlopen failed".
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The crate a library file was built from, as cargo names the file: `libmy_module.so` →
/// `my_module`.
fn crate_name(path: &Path) -> String {
    let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let file = file.strip_suffix(std::env::consts::DLL_SUFFIX).unwrap_or(&file);
    file.strip_prefix(std::env::consts::DLL_PREFIX).unwrap_or(file).replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crate_is_named_by_the_file() {
        assert_eq!(crate_name(Path::new("target/release/libmy_module.so")), "my_module");
        assert_eq!(crate_name(Path::new("libmortar_echo.so")), "mortar_echo");
    }

    #[test]
    fn a_missing_file_and_a_file_that_is_no_library_are_refused_by_path() {
        let error = Library::load(Path::new("no/such/libthing.so")).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("dynamic module no/such/libthing.so: no such file"));
        let not_a_library =
            std::env::temp_dir().join(format!("mortar-not-a-library-{}.so", std::process::id()));
        std::fs::write(&not_a_library, b"not an ELF file").unwrap();
        let error = Library::load(&not_a_library).err().map(|e| e.to_string()).unwrap_or_default();
        std::fs::remove_file(&not_a_library).ok();
        assert!(error.contains("cannot be loaded: dlopen failed: "), "{error}");
        assert!(
            error.contains("invalid ELF header") || error.contains("too short"),
            "the loader's reason: {error}"
        );
    }

    #[test]
    fn directories_fifos_and_symlink_loops_are_named_as_what_they_are() {
        let dir = std::env::temp_dir().join(format!("mortar-library-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load =
            |name: &str| Library::load(&dir.join(name)).err().map(|e| e.to_string()).unwrap_or_default();
        std::fs::create_dir_all(dir.join("libdir.so")).unwrap();
        assert!(
            load("libdir.so").ends_with("libdir.so: is a directory, not a library file"),
            "{}",
            load("libdir.so")
        );
        let fifo = dir.join("libfifo.so");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert!(
            load("libfifo.so").ends_with("libfifo.so: is a FIFO, not a library file"),
            "{}",
            load("libfifo.so")
        );
        std::os::unix::fs::symlink(dir.join("libloop_b.so"), dir.join("libloop_a.so")).unwrap();
        std::os::unix::fs::symlink(dir.join("libloop_a.so"), dir.join("libloop_b.so")).unwrap();
        assert!(
            load("libloop_a.so").contains("libloop_a.so: cannot be read: Too many levels of symbolic links"),
            "{}",
            load("libloop_a.so")
        );
        std::os::unix::fs::symlink(dir.join("nothing"), dir.join("libdangling.so")).unwrap();
        assert!(
            load("libdangling.so").ends_with("libdangling.so: cannot be read: a symlink to nothing"),
            "{}",
            load("libdangling.so")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
