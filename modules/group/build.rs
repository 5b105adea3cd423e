//! Compiles `proto/group.proto` (pure Rust, no system `protoc`), and the user and friend modules'
//! protos for their typed clients (`user.lookup`, `friend.blocked_by`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::Protos::new().import("../user/proto").import("../friend/proto").compile()
}
