//! Compiles `proto/user.proto` (pure Rust, no system `protoc`), and the pack module's protos for
//! its typed client (`pack.add_items`, the starter items).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::Protos::new().import("../pack/proto").compile()
}
