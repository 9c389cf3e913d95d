//! Exponential backoff with full jitter, as an iterator of waits.
//!
//! The n-th wait (n = 1 after the first attempt) is drawn uniformly from
//! `0..=min(cap, base * 2^(n-1))`. Full jitter spreads retries of many
//! clients that failed together. The random source is injected so tests can
//! fix the seed; nothing here sleeps.

use rand::Rng;
use std::time::Duration;

/// Backoff parameters (`retry-delay`, `retry-max-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Base of the exponential.
    pub base: Duration,
    /// Cap of one wait.
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound of the wait after attempt `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The waits after attempt 1, 2, 3, … drawn from `rng`.
    pub fn waits<R: Rng>(self, mut rng: R) -> impl Iterator<Item = Duration> {
        (1u32..).map(move |n| {
            let ceiling = self.ceiling(n).as_nanos();
            let ceiling = u64::try_from(ceiling).unwrap_or(u64::MAX);
            Duration::from_nanos(rng.random_range(0..=ceiling))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceilings_double_until_the_cap() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        };
        let ceilings: Vec<u64> = (1..=7).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.ceiling(200), Duration::from_secs(30));
    }

    #[test]
    fn waits_are_jittered_not_constant() {
        let backoff = Backoff {
            base: Duration::from_secs(8),
            cap: Duration::from_secs(8),
        };
        let waits: Vec<_> = backoff.waits(StdRng::seed_from_u64(1)).take(20).collect();
        assert!(waits.windows(2).any(|w| w[0] != w[1]));
    }

    proptest! {
        #[test]
        fn every_wait_is_within_bounds(
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
            seed in any::<u64>(),
        ) {
            let backoff = Backoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
            };
            for (i, wait) in backoff.waits(StdRng::seed_from_u64(seed)).take(40).enumerate() {
                let n = i as u32 + 1;
                prop_assert!(wait <= backoff.ceiling(n));
                prop_assert!(wait <= backoff.cap);
            }
        }
    }
}
