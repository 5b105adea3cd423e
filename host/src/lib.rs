//! The mortar runtime: everything between a game client's socket and a module's handler.
//!
//! Layout:
//! - [`config`]: node configuration (TOML, defaults, environment overrides, validation).
//! - [`gateway`]: WebSocket listener and per-connection agents that relay requests.
//! - [`rpc`]: the tarpc services nodes offer each other and their messages.
//! - [`worker`]: the route table and the dispatch of requests to module handlers.
//! - [`node`]: what each kind of node starts and how it stops (`dev` so far).

pub mod config;
pub mod gateway;
pub mod node;
pub mod rpc;
pub mod worker;

pub use config::NodeConfig;
