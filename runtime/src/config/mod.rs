//! The sections the runtime reads: `[worker]` and `[tables]`.

mod tables;
mod worker;

pub use tables::TablesConfig;
pub use worker::WorkerConfig;
