//! Log lines that strangers can cause, at most one per interval: a flood of wrong admin tokens or
//! of connections refused at a cap must not fill the disk with one line each. The lines held back
//! are counted, and the next line written says how many.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Lets one line through per interval (see the module docs). Usable as a `static`.
pub struct LogLimit {
    every_ms: u64,
    /// When the next line may be written, in ms since [`origin`].
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl LogLimit {
    /// At most one line per `every`.
    #[allow(clippy::cast_possible_truncation)] // intervals of minutes, not of 584 million years
    pub const fn new(every: Duration) -> Self {
        Self { every_ms: every.as_millis() as u64, next_ms: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one written)` when a line may be written now; `None`
    /// (and it is counted) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(origin().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The process's first use of a limit: the clock's zero.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_the_held() {
        let limit = LogLimit::new(Duration::from_millis(50));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!((0..99).filter_map(|_| limit.allow()).count(), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limit.allow(), Some(99));
    }
}
