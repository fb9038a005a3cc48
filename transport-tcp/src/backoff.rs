//! Reconnect delays: exponential backoff with full jitter.
//!
//! The ceiling doubles from `initial` after every failed attempt up to `max`;
//! each delay is drawn uniformly from `[ceiling / 2, ceiling]`, so that peers
//! that lost each other at the same instant do not redial in lock step, and a
//! delay is never shorter than half the initial one. A success resets the
//! ceiling. Pure: the caller passes the random source.

use rand::Rng;
use std::time::Duration;

/// The bounds of the reconnect delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

/// The delay state of one peer's dialer.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    ceiling: Duration,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            ceiling: config.initial.min(config.max),
        }
    }

    /// The delay before the next attempt; raises the ceiling for the one after.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.config.max);
        let high = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        let low = high / 2;
        Duration::from_micros(rng.gen_range(low..=high))
    }

    /// Back to the initial ceiling, after a connection was established.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.config.initial.min(self.config.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        }
    }

    #[test]
    fn delays_grow_to_the_cap_within_jitter_bounds() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut backoff = Backoff::new(config());
        let ceilings = [10, 20, 40, 80, 100, 100];
        for ceiling in ceilings {
            let delay = backoff.next_delay(&mut rng);
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    #[test]
    fn reset_returns_to_the_initial_ceiling() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut backoff = Backoff::new(config());
        for _ in 0..5 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = SmallRng::seed_from_u64(1);
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| Backoff::new(config()).next_delay(&mut rng))
            .collect();
        assert!(delays.len() > 10);
    }
}
