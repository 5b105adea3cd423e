//! Random spread for waits, so nodes and tasks that failed together do not retry in step.

use std::{collections::hash_map::RandomState, hash::BuildHasher as _, time::Duration};

/// `wait` plus a random part of up to `spread × wait` (`spread` 0.25: up to a quarter more).
pub fn jitter(wait: Duration, spread: f64) -> Duration {
    // Each RandomState has fresh keys: a cheap random number without a dependency.
    let random = RandomState::new().hash_one(0u8);
    wait + wait.mul_f64(spread * (random % 1024) as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_spread_and_varies() {
        let wait = Duration::from_millis(100);
        let waits: Vec<_> = (0..50).map(|_| jitter(wait, 0.25)).collect();
        assert!(waits.iter().all(|w| *w >= wait && *w <= wait.mul_f64(1.25)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    }
}
