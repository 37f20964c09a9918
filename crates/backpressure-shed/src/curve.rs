//! The shedding curve: pure arithmetic from (priority, pressure) to the
//! probability of shedding.

use backpressure_core::{ConfigError, Priority};

/// Where each priority starts being shed and where it is shed entirely.
///
/// Between `start` and `full` the probability ramps linearly from 0 to 1, so
/// the admitted rate falls smoothly as pressure rises instead of switching
/// on and off (which makes the pressure itself oscillate).
///
/// Defaults, with the occupancy of a concurrency limiter in mind (1.0 = every
/// permit in use and nobody queued, 2.0 = the queue full):
///
/// | priority | start | full | why |
/// |---|---|---|---|
/// | `Sheddable` | 0.9 | 1.1 | starts as the permits run out, gone once a tenth of the queue is used |
/// | `SheddablePlus` | 1.1 | 1.3 | next to go, gone while the queue is still mostly free |
/// | `Critical` | 1.9 | 2.0 | the default priority: it uses the queue, and is shed only in its last tenth, which is left to `CriticalPlus` |
/// | `CriticalPlus` | 2.0 | 2.5 | never on a limiter's occupancy (at most 2.0): only the limiter's own queue-full rejection, which evicts lower priorities first |
///
/// The ramps do not overlap (Google SRE's rule: a criticality is shed
/// entirely before the next one up is touched). With overlapping ramps a
/// flood of sheddable work alone pushes the pressure into the critical ramp:
/// measured in `tests/shed.rs`, critical success fell to 94.2 % at a 10x
/// sheddable flood with `Sheddable` ending at 1.0 and `Critical` starting
/// at 0.95.
///
/// Default-priority traffic must be able to use the queue: the first
/// defaults shed `Critical` from 0.95, which in the overload lab's bursty
/// scenario (0.9x in groups of 10, the server preset's queue of 100)
/// turned away 14.71 % of requests that the queue would have served;
/// starting at 1.5 it was 1.56 %, at 1.9 it is 0.34 % (0.28 % with no
/// shedder at all). A limiter with no queue reaches at most 1.0: move the
/// ramps below 1 for one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    start: [f64; 4],
    full: [f64; 4],
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { start: [0.9, 1.1, 1.9, 2.0], full: [1.1, 1.3, 2.0, 2.5] }
    }
}

impl Thresholds {
    /// Sets where `priority` starts being shed and where it is shed entirely.
    #[must_use]
    pub fn set(mut self, priority: Priority, start: f64, full: f64) -> Self {
        self.start[priority.index()] = start;
        self.full[priority.index()] = full;
        self
    }

    /// `(start, full)` for `priority`.
    pub fn get(&self, priority: Priority) -> (f64, f64) {
        (self.start[priority.index()], self.full[priority.index()])
    }

    /// The probability that a request of `priority` is shed at `pressure`.
    #[inline]
    pub fn probability(&self, priority: Priority, pressure: f64) -> f64 {
        let (start, full) = self.get(priority);
        // NaN (a broken signal) never sheds.
        if pressure.is_nan() || pressure <= start {
            0.0
        } else if pressure >= full {
            1.0
        } else {
            (pressure - start) / (full - start)
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (i, p) in Priority::ALL.iter().enumerate() {
            let (start, full) = (self.start[i], self.full[i]);
            if !(start.is_finite() && start >= 0.0) {
                return Err(ConfigError::new(
                    "load-shed",
                    "thresholds",
                    format!("{p}: start must be a finite number >= 0, got {start}"),
                ));
            }
            if !(full.is_finite() && full > start) {
                return Err(ConfigError::new(
                    "load-shed",
                    "thresholds",
                    format!("{p}: full ({full}) must be greater than start ({start})"),
                ));
            }
            if i > 0 && (start < self.start[i - 1] || full < self.full[i - 1]) {
                return Err(ConfigError::new(
                    "load-shed",
                    "thresholds",
                    format!("{p} must not be shed earlier than {}", Priority::ALL[i - 1]),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_between_start_and_full() {
        let t = Thresholds::default();
        assert_eq!(t.probability(Priority::Sheddable, 0.9), 0.0);
        assert!((t.probability(Priority::Sheddable, 1.0) - 0.5).abs() < 1e-9);
        assert_eq!(t.probability(Priority::Sheddable, 1.1), 1.0);
        assert_eq!(t.probability(Priority::Critical, 1.9), 0.0);
        assert_eq!(t.probability(Priority::CriticalPlus, 2.0), 0.0);
        assert_eq!(t.probability(Priority::CriticalPlus, f64::NAN), 0.0);
        assert_eq!(t.probability(Priority::Critical, f64::INFINITY), 1.0);
    }

    #[test]
    fn validation() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = Thresholds::default().set(Priority::Critical, 0.5, 0.6);
        assert_eq!(bad.validate().unwrap_err().field(), "thresholds");
        let bad = Thresholds::default().set(Priority::Sheddable, 0.7, 0.7);
        assert!(bad.validate().is_err());
        let bad = Thresholds::default().set(Priority::Sheddable, f64::NAN, 1.0);
        assert!(bad.validate().is_err());
    }
}
