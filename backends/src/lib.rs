//! The backends of a mortar node, each behind the trait its users see: where modules' documents
//! are kept (`mortar_abi::store::StoreBackend`), their cache entries (`mortar_abi::cache::CacheBackend`),
//! and where logged-in players are ([`session::SessionStore`]).
//!
//! Layout:
//! - [`config`]: the `[storage]`, `[cache]` and `[session]` sections.
//! - [`storage`]: the embedded store (redb, group-committed) and MongoDB.
//! - [`cache`]: in memory (moka) and Redis.
//! - [`session`]: in memory and Redis.
//! - [`redis_setup`]: the one Redis connection setup, shared by the cache, the session store and
//!   the registry.
//! - [`jitter`]: random spread for retry waits.
//!
//! Each backend module has a conformance suite (`conformance`, with the feature of that name)
//! that every implementation of its trait passes against a real server.

pub mod cache;
pub mod config;
pub mod jitter;
pub mod redis_setup;
pub mod session;
pub mod storage;
