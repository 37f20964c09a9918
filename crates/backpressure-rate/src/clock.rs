//! Where a store reads the time.
//!
//! tokio's clock by default, so a paused test runtime (ours, and our users')
//! drives the limiter deterministically. Reading it costs a `clock_gettime`
//! (24 ns on the CI machines, half of a direct check), so the `fast-clock`
//! feature offers the CPU's timestamp counter through `quanta`, as governor
//! uses: a few nanoseconds, but it does not follow tokio's paused clock.

use tokio::time::Instant;

/// The clock a store reads, as nanoseconds since the store was created.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    Tokio(Instant),
    #[cfg(feature = "fast-clock")]
    Fast {
        clock: quanta::Clock,
        start: u64,
    },
}

impl Clock {
    pub(crate) fn tokio() -> Self {
        Clock::Tokio(Instant::now())
    }

    #[cfg(feature = "fast-clock")]
    pub(crate) fn fast() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Clock::Fast { clock, start }
    }

    /// Nanoseconds since the clock was created.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Clock::Tokio(epoch) => {
                let d = Instant::now().saturating_duration_since(*epoch);
                d.as_secs()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(d.subsec_nanos()))
            }
            #[cfg(feature = "fast-clock")]
            Clock::Fast { clock, start } => clock.delta_as_nanos(*start, clock.raw()),
        }
    }
}
