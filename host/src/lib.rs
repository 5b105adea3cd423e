//! The mortar runtime: everything between a game client's socket and a module's handler.
//!
//! Layout:
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`).
//! - [`cache`]: the cache behind `Ctx::cache` (memory, Redis).
//! - [`config`]: node configuration (TOML, defaults, environment overrides, validation).
//! - [`gateway`]: WebSocket listener and per-connection agents that relay requests.
//! - [`redis_setup`]: the one Redis connection setup, shared by the registry and the cache.
//! - [`rpc`]: the tarpc services nodes offer each other, their messages, framing and handshake.
//! - [`worker`]: the route table and the dispatch of requests to module handlers.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`node`]: what each kind of node starts and how it stops (`dev`, `gateway`, `worker`).
//! - [`registry`]: how nodes find each other (in-process, static list, Redis).
//! - [`session`]: the session store: where each logged-in player is (memory, Redis).
//! - [`storage`]: the document store behind `Ctx::store` (embedded redb, group-committed).
//! - `suggest`: did-you-mean for the reasons of `NO_ROUTE` replies (a small edit distance).
//! - [`trace`]: per-request trace ids carried across processes.

pub mod admin;
pub mod cache;
pub mod config;
pub mod gateway;
mod jitter;
mod log_limit;
pub mod metrics;
pub mod node;
pub mod redis_setup;
pub mod registry;
pub mod rpc;
pub mod session;
pub mod storage;
mod suggest;
pub mod trace;
pub mod worker;

pub use config::NodeConfig;
