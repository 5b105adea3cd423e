//! Compiles `proto/friend.proto` (pure Rust, no system `protoc`), and the user module's protos
//! for its typed client (`user.lookup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::Protos::new().import("../user/proto").compile()
}
