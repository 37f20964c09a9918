//! Capped exponential backoff with full jitter.

use std::time::Duration;

use backpressure_core::{ConfigError, Draw};

/// Capped exponential backoff with full jitter (the AWS architecture blog's
/// "full jitter"): before retry `n` (1-based) wait a uniform draw from
/// `[0, min(max, base × 2^(n-1)))`. Full jitter spreads the retries of many
/// clients that failed together, instead of sending them back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new("retry", "backoff.base", "must be greater than zero"));
        }
        if max < base {
            return Err(ConfigError::new(
                "retry",
                "backoff.max",
                format!("must be at least base ({base:?}), got {max:?}"),
            ));
        }
        Ok(Backoff { base, max })
    }

    /// The upper bound of the draw before retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// A jittered delay before retry `retry` (1-based).
    pub(crate) fn delay(&self, retry: u32, draw: &Draw) -> Duration {
        self.ceiling(retry).mul_f64(draw.next_f64())
    }
}

impl Default for Backoff {
    /// 25 ms doubling up to 1 s.
    fn default() -> Self {
        Backoff { base: Duration::from_millis(25), max: Duration::from_secs(1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_and_jitters_below_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(70)).unwrap();
        assert_eq!(b.ceiling(1), Duration::from_millis(10));
        assert_eq!(b.ceiling(3), Duration::from_millis(40));
        assert_eq!(b.ceiling(4), Duration::from_millis(70));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(70));
        let draw = Draw::new(1);
        let delays: Vec<_> = (0..200).map(|_| b.delay(3, &draw)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_millis(40)));
        // Full jitter: the draws cover the range, not a band near the top.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(10)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(30)));
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)).unwrap_err().field(),
            "backoff.base"
        );
        assert_eq!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).unwrap_err().field(),
            "backoff.max"
        );
    }
}
