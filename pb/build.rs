//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and prost-build, and embeds
//! the descriptor set so clients can encode and decode any module message from JSON.

use protox::prost::Message as _;
use std::{error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir("proto")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .map(|path| path.strip_prefix("proto").map(PathBuf::from))
        .collect::<Result<_, _>>()?;
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    prost_build::Config::new().bytes(["."]).enable_type_names().compile_fds(fds)?;
    Ok(())
}
