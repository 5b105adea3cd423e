//! Trace ids: one per client request, made by the gateway, carried in the `AgentMessage` to the
//! worker and on to internal calls, and logged as `trace` (32 hex digits) on every span and event
//! of the request, so one request's log lines share one id across processes.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher as _,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// A per-process random high half, so ids from different gateways do not collide.
static PREFIX: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A new trace id, unique within this process and random across processes.
pub fn new_trace_id() -> u128 {
    (u128::from(*PREFIX) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The log form of a trace id.
pub fn display(trace_id: u128) -> impl std::fmt::Display {
    struct Hex(u128);
    impl std::fmt::Display for Hex {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:032x}", self.0)
        }
    }
    Hex(trace_id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_print_as_32_hex_digits() {
        let (a, b) = (super::new_trace_id(), super::new_trace_id());
        assert_ne!(a, b);
        assert_eq!(a >> 64, b >> 64);
        assert_eq!(super::display(a).to_string().len(), 32);
    }
}
