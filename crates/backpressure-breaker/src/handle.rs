use std::{fmt, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use crate::{Counts, State, state::Shared};

/// Observes and controls a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The current state.
    pub state: State,
    /// Calls, failures and slow calls in the window.
    pub counts: Counts,
    /// `counts.failure_rate()`.
    pub failure_rate: f64,
    /// `counts.slow_rate()`.
    pub slow_rate: f64,
    /// When open: time until the next call may probe.
    pub time_until_half_open: Option<Duration>,
    /// Re-opens in a row (drives the backoff).
    pub consecutive_opens: u32,
    /// Calls rejected while open.
    pub rejected: u64,
    /// Times the breaker opened.
    pub opened: u64,
    /// In metrics-only mode, failed calls after which the breaker would
    /// have tripped (it never does).
    pub shadow_tripped: u64,
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        BreakerHandle { shared }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Everything at once.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let counts = self.shared.counts();
        BreakerSnapshot {
            state: self.state(),
            counts,
            failure_rate: counts.failure_rate(),
            slow_rate: counts.slow_rate(),
            time_until_half_open: self.shared.time_until_half_open(),
            consecutive_opens: self.shared.consecutive_opens(),
            rejected: self.shared.rejected.load(Relaxed),
            opened: self.shared.opened.load(Relaxed),
            shadow_tripped: self.shared.shadow_tripped.load(Relaxed),
        }
    }

    /// Rejects every call until [`reset`](Self::reset) (or `disable`).
    pub fn force_open(&self) {
        self.shared.force(State::ForcedOpen);
    }

    /// Lets every call through, unrecorded, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.shared.force(State::Disabled);
    }

    /// Closed, with an empty window and no backoff history.
    pub fn reset(&self) {
        self.shared.force(State::Closed);
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}
