//! The `mortar` command's library: the subcommands' code, so tests can drive them in-process.
//!
//! Layout:
//! - [`bot`]: `mortar bot`, the load generator.
//! - [`client`]: a WebSocket game client with JSON encoding of any route's messages.
//! - [`modules`]: the module crates linked into this binary.
//! - [`session`]: `mortar client --session`, one player's connection driven line by line.

pub mod bot;
pub mod client;
pub mod modules;
pub mod session;
