//! Compiles `proto/dyntest.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mortar::build::compile_protos()
}
