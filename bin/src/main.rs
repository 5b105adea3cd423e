//! `mortar`: the one executable, the `mortar` command ([`mortar_cli::main`]) with every module crate
//! of the repository linked in.

fn main() -> std::process::ExitCode {
    mortar_cli::main()
}
