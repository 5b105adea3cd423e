//! The one future type that crosses between the host and module code.

pub use mortar_abi::future::BoxFuture;
