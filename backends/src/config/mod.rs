//! The sections the backends read: `[storage]`, `[cache]` and `[session]`.

mod cache;
mod session;
mod storage;

pub use cache::CacheConfig;
pub use session::SessionConfig;
pub use storage::StorageConfig;
