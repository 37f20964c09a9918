//! Where a store reads the time.
//!
//! tokio's clock by default, so a paused test runtime (ours, and our users')
//! drives the limiter deterministically. Reading it costs a `clock_gettime`
//! (24 ns on the CI machines, half of a direct check), so the `fast-clock`
//! feature offers the CPU's timestamp counter through `quanta`, as governor
//! uses: a few nanoseconds, but it does not follow tokio's paused clock.

use tokio::time::Instant;

/// The clock a store reads, as nanoseconds since the store was created.
///
/// `Copy`: a decision served without reading it (from a core's reserve)
/// carries it, to read it only if its header information is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    Tokio(Instant),
    /// The counter's raw reading when the store was created.
    #[cfg(feature = "fast-clock")]
    Fast(u64),
}

/// One calibrated counter for the process, read directly: through
/// `quanta::Instant::now` each reading also checked a thread-local mock
/// clock, and the difference went through a `Duration` and back.
#[cfg(feature = "fast-clock")]
fn counter() -> &'static quanta::Clock {
    static COUNTER: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

impl Clock {
    pub(crate) fn tokio() -> Self {
        Clock::Tokio(Instant::now())
    }

    #[cfg(feature = "fast-clock")]
    pub(crate) fn fast() -> Self {
        Clock::Fast(counter().raw())
    }

    /// Nanoseconds since the clock was created.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        let d = match self {
            Clock::Tokio(epoch) => Instant::now().saturating_duration_since(*epoch),
            // Zero if the counter reads behind the epoch (another core's).
            #[cfg(feature = "fast-clock")]
            Clock::Fast(epoch) => {
                let counter = counter();
                return counter.delta_as_nanos(*epoch, counter.raw());
            }
        };
        d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
    }
}

/// Decisions compare by what they say (a reserved decision carries the
/// clock only to read it later): any two clocks are equal.
impl PartialEq for Clock {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Clock {}

#[cfg(all(test, feature = "fast-clock"))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant as StdInstant};

    /// The counter's deltas are nanoseconds of real time. A real sleep: the
    /// counter does not follow tokio's (pausable) clock, by design.
    #[test]
    fn the_fast_clock_counts_real_nanoseconds() {
        let clock = Clock::fast();
        let before = StdInstant::now();
        let a = clock.nanos();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.nanos();
        let real = u64::try_from(before.elapsed().as_nanos()).unwrap();
        let counted = b - a;
        assert!(counted >= 18_000_000, "20 ms slept, {counted} ns counted");
        assert!(counted <= real + real / 10, "{counted} ns counted in {real} ns of real time");
        // A new store's clock starts from its own creation.
        assert!(Clock::fast().nanos() < counted);
    }
}
