//! The `mortar` command's library: the command itself ([`main`]), which a game's own binary calls
//! with its module crates linked, and the subcommands' code, so tests can drive them in-process.
//!
//! Layout:
//! - `command`: the command line and what each subcommand does ([`main`]).
//! - [`bot`]: `mortar bot`, the load generator.
//! - [`client`]: a WebSocket game client with JSON encoding of any route's messages.
//! - [`modules`]: the module crates linked into this binary.
//! - [`session`]: `mortar client --session`, one player's connection driven line by line.

pub mod bot;
pub mod client;
mod command;
pub mod modules;
pub mod session;

pub use command::main;
