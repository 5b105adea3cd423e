//! How mortar nodes find and call each other. Depends on neither the gateway nor the runtime:
//! both call down into it.
//!
//! Layout:
//! - [`config`]: the `[cluster]`, `[registry]` and `[rpc]` sections.
//! - [`registry`]: the node directory (in-process, a static list, Redis) and its watchers.
//! - [`rpc`]: the protocol types and tarpc services nodes offer each other, their framing,
//!   handshake and listener, the worker pool (selection by weighted rendezvous, peers dialed on
//!   demand) and the failures it maps to codes.
//! - [`suggest`]: did-you-mean for the reasons of `NO_ROUTE` replies.

pub mod config;
pub mod registry;
pub mod rpc;
pub mod suggest;
