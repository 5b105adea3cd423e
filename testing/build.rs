//! Compiles `proto/testing.proto`: the harness's own module.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::compile_protos()
}
