//! What every layer of a mortar node reports, and how: the names of its metrics and the
//! Prometheus recorder behind them, the trace id each client request carries across processes,
//! and log lines that strangers can cause, at most one per interval.
//!
//! Layout:
//! - [`metrics`]: metric names, labels and the Prometheus recorder (`docs/operations.md` lists
//!   every metric).
//! - [`trace`]: per-request trace ids.
//! - [`log_limit`]: rate-limited log lines.

pub mod log_limit;
pub mod metrics;
pub mod trace;
