//! Compiles `proto/testkit.proto`, the test module's contract.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::compile_protos()
}
