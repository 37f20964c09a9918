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
    // Only for adaptive limits, and only for a request it measures: when
    // the permit was taken, and the in-flight count then with the
    // saturation flag in its top bit. Fixed limits never read the clock.
    start: Start,
}

/// [`Permit`]'s measurement: `[nanoseconds since the limiter's epoch + 1,
/// in-flight bits]`, `[0, 0]` when the request is not measured.
///
/// Two plain words rather than an `Option<(Instant, u32)>`: writing `None`
/// into the `Option` wrote only its niche (4 bytes), and moving the permit
/// into the response future then read 16 bytes over it, a load the CPU
/// cannot forward from the smaller store and must wait for (`perf annotate`
/// on `cargo bench -p backpressure-benches --bench layers --
/// concurrency/backpressure`: the hottest instruction of the fixed limit).
type Start = [u64; 2];

const UNMEASURED: Start = [0, 0];

const SATURATED: u32 = 1 << 31;

impl Permit {
    /// A permit just taken. `waited`: it came through the queue.
    ///
    /// Always inlined, the measurement outlined, so that a permit is built
    /// where it is used: built by a call, it was written to memory and read
    /// back in other widths to move it into the response future (a
    /// store-forwarding stall; see [`Start`]).
    #[inline(always)]
    pub(crate) fn new(shared: Stripe<Shared>, waited: bool) -> Self {
        let start = if shared.is_adaptive() { Self::start(&shared, waited) } else { UNMEASURED };
        Permit { shared, start }
    }

    /// What an adaptive limit measures of a request taking a permit now, if
    /// it measures this one.
    fn start(shared: &Shared, waited: bool) -> Start {
        if shared.should_sample() {
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
            let bits = in_flight | if saturated { SATURATED } else { 0 };
            [shared.since_epoch(Instant::now()).saturating_add(1), u64::from(bits)]
        } else {
            UNMEASURED
        }
    }

    /// Whether the outcome matters (the limit is adaptive).
    #[inline]
    pub(crate) fn wants_outcome(&self) -> bool {
        self.start[0] != 0
    }

    fn record(&mut self, dropped: bool, deadline_cut: bool) {
        let [at, bits] = std::mem::replace(&mut self.start, UNMEASURED);
        if at != 0 {
            let (start, bits) = (self.shared.at_epoch(at - 1), bits as u32);
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
            Outcome::Failure | Outcome::Ignore => self.start = UNMEASURED,
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
        if self.wants_outcome() {
            if Deadline::in_expired_scope() {
                self.record(true, true);
            } else if self.shared.cancel_is_drop {
                self.record(true, false);
            } else {
                self.start = UNMEASURED;
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
