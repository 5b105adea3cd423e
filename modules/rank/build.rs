//! Compiles `proto/rank.proto` (pure Rust, no system `protoc`), and the user, friend and mail
//! modules' protos for their typed clients (`user.lookup`, `friend.list`, `mail.send`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::Protos::new()
        .import("../user/proto")
        .import("../friend/proto")
        .import("../mail/proto")
        .compile()
}
