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
    #[cfg(feature = "fast-clock")]
    Fast(quanta::Instant),
}

impl Clock {
    pub(crate) fn tokio() -> Self {
        Clock::Tokio(Instant::now())
    }

    #[cfg(feature = "fast-clock")]
    pub(crate) fn fast() -> Self {
        Clock::Fast(quanta::Instant::now())
    }

    /// Nanoseconds since the clock was created.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        let d = match self {
            Clock::Tokio(epoch) => Instant::now().saturating_duration_since(*epoch),
            #[cfg(feature = "fast-clock")]
            Clock::Fast(epoch) => quanta::Instant::now().saturating_duration_since(*epoch),
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
