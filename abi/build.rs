//! Computes the parts of the dynamic-module ABI fingerprint that only the build knows: the
//! compiler (`rustc -vV`: version, commit, host), the target triple, and a hash of this crate's
//! own source (the types that cross between host and library), so two builds of the contract that
//! could lay out a type differently never share a fingerprint.

use std::{
    error::Error,
    path::{Path, PathBuf},
    process::Command,
};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=src");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc).arg("-vV").output()?;
    let version = String::from_utf8(version.stdout)?;
    let release = version.lines().next().unwrap_or("rustc unknown").trim().to_owned();
    println!("cargo:rustc-env=MORTAR_ABI_RUSTC={release}");
    println!("cargo:rustc-env=MORTAR_ABI_TARGET={}", std::env::var("TARGET")?);

    let mut files = Vec::new();
    collect(Path::new("src"), &mut files)?;
    files.sort();
    // FNV-1a over each file's path and bytes: stable across runs and machines.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let name = file.to_string_lossy().replace('\\', "/");
        for byte in name.bytes().chain(std::fs::read(file)?) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=MORTAR_ABI_SOURCE={hash:016x}");
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}
