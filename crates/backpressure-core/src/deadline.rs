use std::{cell::Cell, fmt, time::Duration};

use tokio::time::Instant;

/// The instant by which a request must be answered.
///
/// Deadlines are tokio [`Instant`]s, so they follow a paused test clock.
///
/// # How a deadline reaches inner layers
///
/// An outer layer (the timeout) decides the deadline when the request arrives;
/// inner layers (the concurrency queue, a rate limiter's bounded wait) must
/// not wait past it. The outer layer calls the inner service's `call` inside
/// [`Deadline::scope`], and inner layers read [`Deadline::current`] from their
/// own `call`. This works for any request type and costs no allocation; with
/// the `http` feature the timeout layer can also store the deadline in the
/// request's extensions for handlers to read.
///
/// ```
/// use std::time::Duration;
/// use backpressure_core::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let outer = Deadline::after(Duration::from_secs(1));
/// assert_eq!(Deadline::current(), None);
/// outer.scope(|| {
///     // Inside an outer layer's scope, an inner layer sees the deadline...
///     assert_eq!(Deadline::current(), Some(outer));
///     // ...and a nested, later deadline cannot extend it.
///     Deadline::after(Duration::from_secs(5)).scope(|| {
///         assert_eq!(Deadline::current(), Some(outer));
///     });
/// });
/// assert_eq!(Deadline::current(), None);
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

// What is in scope on this thread while a request is being dispatched.
//
// A deadline may be *pending*: "`TIMEOUT` after arrival", with the arrival
// instant read from the clock only when somebody needs the deadline as an
// instant. Every nested scope of one dispatch shares that one reading, so a
// stack of layers whose inner service answers at once never reads the clock.
//
// Three small cells rather than one struct in one cell: copying a 48-byte
// struct in and out of a cell on every call stalls store-to-load forwarding
// and cost more than everything else on the timeout's fast path.
thread_local! {
    static FIXED: Cell<Option<Instant>> = const { Cell::new(None) };
    static TIMEOUT: Cell<Option<Duration>> = const { Cell::new(None) };
    static ARRIVAL: Cell<Option<Instant>> = const { Cell::new(None) };
    // Set while a layer drops the futures of a request whose deadline has
    // passed (see `Deadline::expired_scope`).
    static EXPIRING: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn resolve(fixed: Option<Instant>, timeout: Option<Duration>, arrival: Instant) -> Option<Instant> {
    min_instant(fixed, timeout.map(|t| Deadline::after_from(arrival, t).0))
}

#[inline]
fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[inline]
fn min_duration(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// About 30 years: what "no deadline" saturates to when a duration overflows.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + duration`, capped at about thirty years ahead: a duration too
/// large for the clock (e.g. `Duration::MAX`, which every builder accepts as
/// "practically never") gives an instant thirty years ahead instead of a
/// panic, and so does any duration past that horizon.
///
/// Every layer computes its timers with this, so that no configuration a
/// builder accepts can panic later in `Instant + Duration`. The cap matters
/// too: a timer millions of years out is representable, but a paused test
/// runtime that auto-advances to it walks tokio's timer wheel there in
/// two-year steps, which takes hours.
///
/// ```
/// use std::time::Duration;
/// use backpressure_core::instant_after;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(instant_after(now, Duration::from_secs(1)), now + Duration::from_secs(1));
/// let horizon = now + Duration::from_secs(86_400 * 365 * 30);
/// assert_eq!(instant_after(now, Duration::MAX), horizon);
/// assert_eq!(instant_after(now, Duration::from_secs(u64::MAX / 2)), horizon);
/// ```
#[inline]
pub fn instant_after(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration.min(FAR_FUTURE)).unwrap_or(now)
}

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `timeout` from now (tokio time). A timeout too large to
    /// represent saturates to about thirty years.
    pub fn after(timeout: Duration) -> Self {
        Self::after_from(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now`, saturating like [`after`](Self::after).
    pub fn after_from(now: Instant, timeout: Duration) -> Self {
        Deadline(instant_after(now, timeout))
    }

    /// The instant of the deadline.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left until the deadline, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Time left from `now` until the deadline, zero once it has passed.
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether the deadline has passed (tokio time).
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The earlier of two optional deadlines.
    #[inline]
    pub fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        min_instant(a.map(|d| d.0), b.map(|d| d.0)).map(Deadline)
    }

    /// The deadline of the request being dispatched on this thread, if an
    /// outer layer set one with [`scope`](Self::scope) or
    /// [`PendingDeadline::scope`].
    ///
    /// Only meaningful inside a `Service::call` (that is where outer layers
    /// open the scope); read it there and keep it in the response future.
    pub fn current() -> Option<Deadline> {
        let fixed = FIXED.with(Cell::get);
        let timeout = TIMEOUT.with(Cell::get);
        if timeout.is_none() {
            return fixed.map(Deadline);
        }
        let arrival = ARRIVAL.with(|cell| match cell.get() {
            Some(arrival) => arrival,
            None => {
                let now = Instant::now();
                cell.set(Some(now));
                now
            }
        });
        resolve(fixed, timeout, arrival).map(Deadline)
    }

    /// Runs `f` in `deadline`'s scope if there is one, plainly otherwise: how
    /// a layer that calls its inner service later, from its future, passes
    /// on the deadline it read in its own `call`.
    #[inline]
    pub fn scope_opt<R>(deadline: Option<Deadline>, f: impl FnOnce() -> R) -> R {
        match deadline {
            Some(d) => d.scope(f),
            None => f(),
        }
    }

    /// Runs `f`, which drops the futures of a request whose deadline has
    /// passed, so that their `Drop` code can tell a timeout from a client
    /// that went away: inside, [`Deadline::in_expired_scope`] is true.
    ///
    /// The timeout layer drops its inner future this way when the deadline
    /// fires; a layer of your own that cuts requests at their deadline
    /// should too. Nests, and restores the previous value even if `f`
    /// panics.
    ///
    /// ```
    /// use backpressure_core::Deadline;
    ///
    /// struct Guard;
    /// impl Drop for Guard {
    ///     fn drop(&mut self) {
    ///         // A breaker would record a failure here, a limiter a drop.
    ///         println!("timed out: {}", Deadline::in_expired_scope());
    ///     }
    /// }
    /// let guard = Guard;
    /// Deadline::expired_scope(|| drop(guard)); // timed out: true
    /// assert!(!Deadline::in_expired_scope());
    /// drop(Guard); // timed out: false — the client left
    /// ```
    #[inline]
    pub fn expired_scope<R>(f: impl FnOnce() -> R) -> R {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                EXPIRING.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(EXPIRING.with(|c| c.replace(true)));
        f()
    }

    /// Whether the code running now is inside [`Deadline::expired_scope`]:
    /// in a `Drop` implementation, whether the request is being dropped
    /// because its deadline passed (`true`) or for another reason, most
    /// often a client that went away (`false`).
    #[inline]
    pub fn in_expired_scope() -> bool {
        EXPIRING.with(Cell::get)
    }

    /// Runs `f` with this deadline as [`Deadline::current`]: the earlier of
    /// this one and any deadline already in scope. The previous value is
    /// restored afterwards, even if `f` panics.
    #[inline]
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> R {
        let pending = PendingDeadline { fixed: Some(self.0), timeout: None };
        pending.scope(f).0
    }
}

/// A deadline that may not be pinned to the clock yet: "`timeout` after the
/// request's arrival, and no later than `fixed`".
///
/// This is how the timeout layer avoids reading the clock on its fast path:
/// it opens a pending scope around the inner `call`; the clock is read only if
/// an inner layer asks for [`Deadline::current`], or when the layer itself
/// must arm a timer because something is pending. All nested scopes of one
/// dispatch share that single reading of the arrival instant.
///
/// ```
/// use std::time::Duration;
/// use backpressure_core::{Deadline, PendingDeadline};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let pending = PendingDeadline::capture().with_timeout(Duration::from_millis(100));
/// // Nobody asked: the deadline was never pinned.
/// let ((), resolved) = pending.scope(|| ());
/// assert_eq!(resolved, None);
/// // An inner layer asks: it is pinned once, and the scope reports it.
/// let (seen, resolved) = pending.scope(Deadline::current);
/// assert_eq!(seen, resolved);
/// assert_eq!(resolved.unwrap().remaining(), Duration::from_millis(100));
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingDeadline {
    fixed: Option<Instant>,
    timeout: Option<Duration>,
}

impl PendingDeadline {
    /// What is in scope on this thread now (an outer layer's deadline,
    /// possibly still pending), without reading the clock.
    #[inline]
    pub fn capture() -> Self {
        let fixed = FIXED.with(Cell::get);
        let timeout = TIMEOUT.with(Cell::get);
        if timeout.is_some()
            && let Some(arrival) = ARRIVAL.with(Cell::get)
        {
            // Already pinned by somebody: keep the instant.
            return PendingDeadline { fixed: resolve(fixed, timeout, arrival), timeout: None };
        }
        PendingDeadline { fixed, timeout }
    }

    /// Also no later than `timeout` after arrival.
    #[must_use]
    #[inline]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        PendingDeadline { timeout: min_duration(self.timeout, Some(timeout)), ..self }
    }

    /// Also no later than `deadline`, if any.
    #[must_use]
    #[inline]
    pub fn with_deadline(self, deadline: Option<Deadline>) -> Self {
        PendingDeadline { fixed: min_instant(self.fixed, deadline.map(|d| d.0)), ..self }
    }

    /// Whether there is any deadline at all.
    #[inline]
    pub fn is_some(&self) -> bool {
        self.fixed.is_some() || self.timeout.is_some()
    }

    /// Whether the request is out of time without reading the clock: a zero
    /// timeout. (A fixed deadline in the past needs the clock: see
    /// [`resolve_at`](Self::resolve_at).)
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.timeout == Some(Duration::ZERO)
    }

    /// Whether a fixed part exists, so checking expiry needs the clock.
    #[inline]
    pub fn has_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// Pins the deadline, taking `arrival` as the request's arrival instant.
    pub fn resolve_at(self, arrival: Instant) -> Option<Deadline> {
        resolve(self.fixed, self.timeout, arrival).map(Deadline)
    }

    /// Runs `f` with this deadline in scope (combined with any deadline
    /// already in scope, keeping the earlier), restoring the previous scope
    /// afterwards even if `f` panics. Returns `f`'s result and the deadline if
    /// anybody pinned it during `f`.
    #[inline]
    pub fn scope<R>(self, f: impl FnOnce() -> R) -> (R, Option<Deadline>) {
        let guard = ScopeGuard::enter(self);
        let out = f();
        let resolved = guard.resolved();
        (out, resolved)
    }
}

/// Restores the previous scope when a scope ends, even on panic.
struct ScopeGuard {
    fixed: Option<Instant>,
    timeout: Option<Duration>,
    arrival: Option<Instant>,
}

impl ScopeGuard {
    #[inline]
    fn enter(pending: PendingDeadline) -> Self {
        let fixed = FIXED.with(|c| c.replace(min_instant(c.get(), pending.fixed)));
        let timeout = TIMEOUT.with(|c| c.replace(min_duration(c.get(), pending.timeout)));
        let arrival = ARRIVAL.with(Cell::get);
        ScopeGuard { fixed, timeout, arrival }
    }

    #[inline]
    fn resolved(&self) -> Option<Deadline> {
        let fixed = FIXED.with(Cell::get);
        match TIMEOUT.with(Cell::get) {
            None => fixed.map(Deadline),
            timeout => {
                ARRIVAL.with(Cell::get).and_then(|a| resolve(fixed, timeout, a)).map(Deadline)
            }
        }
    }
}

impl Drop for ScopeGuard {
    #[inline]
    fn drop(&mut self) {
        FIXED.with(|c| c.set(self.fixed));
        TIMEOUT.with(|c| c.set(self.timeout));
        // A reading of the arrival made inside belongs to the same dispatch:
        // an outer pending scope keeps it, so both agree on the instant.
        // Outside any pending scope it is dropped, or the next request on
        // this thread would inherit a stale arrival.
        if self.timeout.is_none() {
            ARRIVAL.with(|c| c.set(self.arrival));
        }
    }
}

impl fmt::Debug for PendingDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingDeadline")
            .field("fixed", &self.fixed.map(Deadline))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        if self.0 >= now {
            write!(f, "Deadline(in {:?})", self.0 - now)
        } else {
            write!(f, "Deadline({:?} ago)", now - self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let d = Deadline::after(Duration::from_millis(100));
        assert_eq!(d.remaining(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(d.remaining(), Duration::from_millis(40));
        assert!(!d.is_expired());
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        assert!(d.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn huge_timeouts_saturate_instead_of_panicking() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.remaining() > Duration::from_secs(86_400 * 365));
    }

    #[tokio::test(start_paused = true)]
    async fn scope_keeps_the_earlier_and_restores() {
        let early = Deadline::after(Duration::from_millis(10));
        let late = Deadline::after(Duration::from_millis(20));
        late.scope(|| {
            assert_eq!(Deadline::current(), Some(late));
            early.scope(|| assert_eq!(Deadline::current(), Some(early)));
            assert_eq!(Deadline::current(), Some(late));
        });
        assert_eq!(Deadline::current(), None);
        let caught = std::panic::catch_unwind(|| early.scope(|| panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(Deadline::current(), None, "restored after a panic");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_scopes_read_the_clock_once_and_share_it() {
        let outer = PendingDeadline::capture().with_timeout(Duration::from_millis(300));
        let ((), resolved) = outer.scope(|| {
            let inner = PendingDeadline::capture().with_timeout(Duration::from_millis(100));
            assert_eq!(inner, PendingDeadline::default().with_timeout(Duration::from_millis(100)));
            let (seen, resolved) = inner.scope(Deadline::current);
            assert_eq!(seen, resolved);
            assert_eq!(seen.unwrap().remaining(), Duration::from_millis(100));
        });
        // The outer scope learnt the arrival instant from the inner reading.
        assert_eq!(resolved.unwrap().remaining(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_arrival_does_not_leak_into_the_next_dispatch() {
        let pending = PendingDeadline::default().with_timeout(Duration::from_millis(100));
        let (_, first) = pending.scope(Deadline::current);
        tokio::time::advance(Duration::from_millis(40)).await;
        let (_, second) = pending.scope(Deadline::current);
        assert_eq!(second.unwrap().instant() - first.unwrap().instant(), Duration::from_millis(40));
        assert_eq!(PendingDeadline::capture(), PendingDeadline::default());
    }

    #[tokio::test(start_paused = true)]
    async fn capture_keeps_a_pinned_outer_deadline() {
        let outer = PendingDeadline::default().with_timeout(Duration::from_millis(100));
        outer.scope(|| {
            let pinned = Deadline::current().unwrap();
            let captured = PendingDeadline::capture();
            assert!(captured.has_fixed());
            assert_eq!(captured.resolve_at(Instant::now() + Duration::from_secs(5)), Some(pinned));
        });
    }

    #[test]
    fn earliest_of_options() {
        let now = Instant::now();
        let a = Deadline::at(now);
        let b = Deadline::at(now + Duration::from_secs(1));
        assert_eq!(Deadline::earliest(Some(a), Some(b)), Some(a));
        assert_eq!(Deadline::earliest(None, Some(b)), Some(b));
        assert_eq!(Deadline::earliest(Some(a), None), Some(a));
        assert_eq!(Deadline::earliest(None, None), None);
    }
}
