//! Every `.proto` of the repository compiles with Google's `protoc`, as client authors run it: the
//! build uses protox, which accepts some files `protoc` refuses (a message named like the rpc
//! using it, written bare inside its service).
//!
//! Needs `protoc`: `MORTAR_TEST_PROTOC` (scripts/test.sh installs Debian's protobuf-compiler and
//! sets it) or `protoc` on the PATH. Without it the test fails rather than pass unchecked.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn protoc() -> PathBuf {
    if let Some(path) = std::env::var_os("MORTAR_TEST_PROTOC").filter(|path| !path.is_empty()) {
        return path.into();
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("protoc")).find(|path| path.is_file()));
    found.flatten().unwrap_or_else(|| {
        panic!("Google's protoc is needed: run scripts/test.sh, or install protobuf-compiler, or set MORTAR_TEST_PROTOC")
    })
}

/// Every folder named `proto` under `dir`, build output left out.
fn proto_dirs(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if !path.is_dir() || name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if name == "proto" {
            found.push(path.clone());
        }
        proto_dirs(&path, found);
    }
}

#[test]
fn every_proto_compiles_with_googles_protoc() {
    let protoc = protoc();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = Vec::new();
    proto_dirs(&root, &mut dirs);
    dirs.sort();
    let out = std::env::temp_dir().join(format!("mortar-protoc-{}.bin", std::process::id()));
    let mut checked = Vec::new();
    for dir in &dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
            .collect();
        files.sort();
        if files.is_empty() {
            continue;
        }
        let output = Command::new(&protoc)
            .arg(format!("-I{}", dir.display()))
            .arg(format!("--descriptor_set_out={}", out.display()))
            .args(&files)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", protoc.display()));
        assert!(
            output.status.success(),
            "protoc refuses the protos in {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked.extend(files);
    }
    std::fs::remove_file(&out).ok();
    let names: Vec<String> = checked
        .iter()
        .filter_map(|file| file.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for expected in ["mortar.proto", "echo.proto", "testkit.proto"] {
        assert!(names.iter().any(|name| name == expected), "{expected} not found among {names:?}");
    }
}
