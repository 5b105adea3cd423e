//! The build-script side of a module crate (feature `build`): compiles the crate's `proto/`
//! folder with protox (pure Rust: no system `protoc`) and prost-build.
//!
//! A module crate's `build.rs` is one call:
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mortar::build::compile_protos()
//! }
//! ```
//!
//! and its `src/lib.rs` includes each package with [`include_proto!`](crate::include_proto).

use protox::prost::Message as _;
use std::{
    error::Error,
    path::{Path, PathBuf},
};

/// The file, in `OUT_DIR`, holding the encoded descriptor set of a crate's protos.
pub const DESCRIPTOR_FILE: &str = "mortar_protos.bin";

/// Compiles every `proto/*.proto` of the crate being built: one Rust file per package in
/// `OUT_DIR` (for [`include_proto!`](crate::include_proto)) and the descriptor set the crate
/// registers with its routes, so a node checks each route against its rpc and clients can encode
/// JSON for it.
///
/// # Errors
/// When `proto/` cannot be read, holds no `.proto` file, or a file does not compile (the error
/// names the file, line and reason).
pub fn compile_protos() -> Result<(), Box<dyn Error>> {
    compile_protos_in("proto")
}

/// [`compile_protos`] for another folder, relative to the crate's manifest.
///
/// # Errors
/// As [`compile_protos`].
pub fn compile_protos_in(dir: impl AsRef<Path>) -> Result<(), Box<dyn Error>> {
    let dir = dir.as_ref();
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(PathBuf::from(path.strip_prefix(dir)?));
        }
    }
    if files.is_empty() {
        return Err(format!("{} holds no .proto file", dir.display()).into());
    }
    files.sort();
    for file in &files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)?;
        if let Some(problem) = crate::proto_check::protoc_refuses(&text) {
            return Err(format!("{}:{problem}", path.display()).into());
        }
    }
    let descriptors = protox::compile(&files, [dir])?;
    run_protoc(dir, &files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join(DESCRIPTOR_FILE), descriptors.encode_to_vec())?;
    prost_build::Config::new()
        // Generated code names prost through the SDK: a module crate depends on `mortar` only.
        .prost_path("::mortar::prost")
        .bytes(["."])
        .enable_type_names()
        .compile_fds(descriptors)?;
    Ok(())
}

/// Runs Google's `protoc` on `files` when there is one (`MORTAR_PROTOC`, or `protoc` on the
/// `PATH`), as client authors will: a file it refuses fails the build with its message. Without
/// one, `protoc_refuses` has checked what protox and `protoc` are known to disagree on.
fn run_protoc(dir: &Path, files: &[PathBuf]) -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=MORTAR_PROTOC");
    let protoc =
        std::env::var_os("MORTAR_PROTOC").filter(|path| !path.is_empty()).map(PathBuf::from).or_else(|| {
            let paths = std::env::var_os("PATH")?;
            std::env::split_paths(&paths).map(|dir| dir.join("protoc")).find(|path| path.is_file())
        });
    let Some(protoc) = protoc else { return Ok(()) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("protoc-check.bin");
    let output = std::process::Command::new(&protoc)
        .arg(format!("-I{}", dir.display()))
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(files)
        .output()
        .map_err(|error| format!("cannot run {}: {error}", protoc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "Google's protoc ({}) refuses the protos in {}, as it would for a client author:\n{}",
            protoc.display(),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(())
}
