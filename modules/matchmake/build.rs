//! Compiles `proto/matchmake.proto` (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::compile_protos()
}
