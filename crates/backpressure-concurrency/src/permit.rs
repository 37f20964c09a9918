use std::sync::atomic::Ordering::Relaxed;

use backpressure_core::{Deadline, Outcome, RejectKind, stripe::Stripe};
use tokio::time::Instant;

use crate::{algorithm::Sample, shared::Shared};

/// A held permit. Dropping it returns the permit (handing it to the next
/// waiter); if the request had not completed, an adaptive limiter learns
/// what the drop says (see [`Drop`](#impl-Drop-for-Permit)).
#[derive(Debug)]
pub(crate) struct Permit {
    // The calling thread's stripe of the limiter: holding it touches no
    // reference count other cores write (see `backpressure_core::stripe`).
    shared: Stripe<Shared>,
    // Only for adaptive limits: when the permit was taken, and the in-flight
    // count then with the saturation flag in its top bit (u32: 16 bytes in
    // all, which keeps the future small). Fixed limits never read the clock.
    start: Option<(Instant, u32)>,
}

const SATURATED: u32 = 1 << 31;

impl Permit {
    /// A permit just taken. `waited`: it came through the queue.
    #[inline]
    pub(crate) fn new(shared: Stripe<Shared>, waited: bool) -> Self {
        let start = if shared.is_adaptive() && shared.should_sample() {
            // One load of the word: permits cores hold in reserve count as
            // in flight (at most a sixteenth of the limit); summing the
            // reserves would read every core's line on every request.
            let in_flight = shared.counter.load().0;
            // The limit, not the backend, was the bottleneck for this
            // request: it had to wait, or it took the last permit, or the
            // queue stands (CoDel cut it short: a permit freed by a higher
            // limit goes to newcomers, not to a long line of waiters).
            let saturated = waited
                || in_flight >= shared.limit.load(Relaxed)
                || shared.counter.has_waiters()
                || shared.standing.load(Relaxed);
            let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX >> 1).min(SATURATED - 1);
            Some((Instant::now(), in_flight | if saturated { SATURATED } else { 0 }))
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

    fn record(&mut self, dropped: bool, deadline_cut: bool) {
        if let Some((start, bits)) = self.start.take() {
            let now = Instant::now();
            let sample = Sample {
                start,
                rtt: now.saturating_duration_since(start),
                in_flight: (bits & !SATURATED) as usize,
                dropped,
                saturated: bits & SATURATED != 0,
                deadline_cut,
            };
            self.shared.record(now, sample);
        }
    }

    /// The request completed with `outcome`: feed the algorithm now; the
    /// permit is returned when it is dropped.
    ///
    /// Only congestion ([`Outcome::Overloaded`]) is a drop. A
    /// [`Outcome::Failure`] (a handler's 500) says nothing about capacity,
    /// and its latency nothing about the backend's (a failure is often
    /// instant): no sample at all, like [`Outcome::Ignore`].
    pub(crate) fn complete(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.record(false, false),
            Outcome::Overloaded => self.record(true, false),
            Outcome::Failure | Outcome::Ignore => self.start = None,
        }
    }
}

impl Drop for Permit {
    /// A request dropped before it completed: a drop (congestion) if its
    /// deadline cut it (the timeout layer above drops it inside
    /// [`Deadline::expired_scope`]); otherwise the client went away, which
    /// says nothing about capacity unless `cancel_is_drop(true)`.
    #[inline]
    fn drop(&mut self) {
        if self.start.is_some() {
            if Deadline::in_expired_scope() {
                self.record(true, true);
            } else if self.shared.cancel_is_drop {
                self.record(true, false);
            } else {
                self.start = None;
            }
        }
        self.shared.release();
    }
}

/// A queued request. Dropping it leaves the queue (and returns a permit that
/// was handed to it but not yet collected).
#[derive(Debug)]
pub(crate) struct Waiter {
    shared: Option<Stripe<Shared>>,
    pub(crate) slot: usize,
    pub(crate) until: Instant,
    pub(crate) kind: RejectKind,
}

impl Waiter {
    pub(crate) fn new(
        shared: Stripe<Shared>,
        slot: usize,
        until: Instant,
        kind: RejectKind,
    ) -> Self {
        Waiter { shared: Some(shared), slot, until, kind }
    }

    pub(crate) fn shared(&self) -> &Shared {
        // Only `None` after `settle`, after which the waiter is dropped.
        self.shared.as_ref().expect("waiter used after it left the queue")
    }

    /// Its slot has been collected (with or without a permit): take the
    /// limiter's handle; dropping the waiter then does nothing.
    pub(crate) fn settle(&mut self) -> Stripe<Shared> {
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
