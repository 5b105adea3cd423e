//! Compiles `proto/mail.proto` (pure Rust, no system `protoc`), and the pack and user modules'
//! protos for their typed clients (`pack.add_items`, `pack.check_items`, `user.lookup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::Protos::new().import("../pack/proto").import("../user/proto").compile()
}
