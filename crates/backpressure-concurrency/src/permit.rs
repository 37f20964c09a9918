use std::sync::Arc;

use backpressure_core::{Outcome, RejectKind};
use tokio::time::Instant;

use crate::{algorithm::Sample, shared::Shared};

/// A held permit. Dropping it returns the permit (handing it to the next
/// waiter); if the request had not completed, an adaptive limiter counts the
/// cancellation as a drop.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    // Only for adaptive limits: when the permit was taken, and the in-flight
    // count then (u32: 16 bytes in all, which keeps the future small). Fixed
    // limits never read the clock.
    start: Option<(Instant, u32)>,
}

impl Permit {
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let start = if shared.is_adaptive() {
            let in_flight = u32::try_from(shared.counter.in_flight()).unwrap_or(u32::MAX);
            Some((Instant::now(), in_flight))
        } else {
            None
        };
        Permit { shared, start }
    }

    /// Whether the outcome matters (the limit is adaptive).
    #[inline]
    pub(crate) fn wants_outcome(&self) -> bool {
        self.start.is_some()
    }

    /// The request completed with `outcome`: feed the algorithm now; the
    /// permit is returned when it is dropped.
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        if let Some((start, in_flight)) = self.start.take() {
            let dropped = match outcome {
                Outcome::Success => false,
                Outcome::Failure => true,
                Outcome::Ignore => return,
            };
            let now = Instant::now();
            let rtt = now.saturating_duration_since(start);
            let sample = Sample { start, rtt, in_flight: in_flight as usize, dropped };
            self.shared.record(now, sample);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some((start, in_flight)) = self.start.take()
            && self.shared.cancel_is_drop
        {
            let now = Instant::now();
            let rtt = now.saturating_duration_since(start);
            let sample = Sample { start, rtt, in_flight: in_flight as usize, dropped: true };
            self.shared.record(now, sample);
        }
        self.shared.release();
    }
}

/// A queued request. Dropping it leaves the queue (and returns a permit that
/// was handed to it but not yet collected).
#[derive(Debug)]
pub(crate) struct Waiter {
    shared: Option<Arc<Shared>>,
    pub(crate) slot: usize,
    pub(crate) until: Instant,
    pub(crate) kind: RejectKind,
}

impl Waiter {
    pub(crate) fn new(shared: Arc<Shared>, slot: usize, until: Instant, kind: RejectKind) -> Self {
        Waiter { shared: Some(shared), slot, until, kind }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        // Only `None` after `settle`, after which the waiter is dropped.
        self.shared.as_ref().expect("waiter used after it left the queue")
    }

    /// Whether [`settle`](Self::settle) has been called.
    pub(crate) fn is_settled(&self) -> bool {
        self.shared.is_none()
    }

    /// Its slot has been collected (with or without a permit): take the
    /// limiter's handle; dropping the waiter then does nothing.
    pub(crate) fn settle(&mut self) -> Arc<Shared> {
        self.shared.take().expect("waiter used after it left the queue")
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.cancel_waiter(self.slot);
        }
    }
}
