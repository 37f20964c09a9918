//! The breaker's shared state machine.

use std::{
    fmt,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Release},
    },
    time::Duration,
};

use backpressure_core::{Draw, LayerName};
use tokio::time::Instant;

use crate::window::{CountWindow, Counts, Mark, TimeWindow};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected until the open time has passed.
    Open,
    /// A few probe calls test the dependency.
    HalfOpen,
    /// Rejecting every call, by hand ([`BreakerHandle::force_open`](crate::BreakerHandle::force_open)).
    ForcedOpen,
    /// Letting every call through unrecorded, by hand.
    Disabled,
}

impl State {
    /// Every state, for metrics.
    pub const ALL: [State; 5] =
        [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::Disabled];

    /// A lowercase name for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            _ => State::Closed,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long the breaker stays open after consecutive re-opens.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Each consecutive re-open multiplies the open time by this (≥ 1).
    pub multiplier: f64,
    /// The open time never exceeds this.
    pub max: Duration,
    /// Random spread, as a fraction of the open time (0..1), so a fleet of
    /// clients does not probe in step.
    pub jitter: f64,
}

impl Backoff {
    /// Multiplies the open time by `multiplier` (≥ 1) at each consecutive
    /// re-open, up to `max`, with no jitter (see [`jitter`](Self::jitter)).
    /// Validated when the breaker is built.
    pub const fn new(multiplier: f64, max: Duration) -> Self {
        Backoff { multiplier, max, jitter: 0.0 }
    }

    /// Spreads each open time by up to this fraction (0..1) of it, so a
    /// fleet of clients does not probe in step.
    #[must_use]
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }
}

// One per breaker, inside its shared state: the count window's size is its
// cursor's cache-line padding, which is the point of it.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

pub(crate) struct Config {
    pub(crate) failure_rate: f64,
    pub(crate) slow_rate: f64,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) minimum_calls: u64,
    pub(crate) open_duration: Duration,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) half_open_calls: u32,
    pub(crate) half_open_max_wait: Duration,
    pub(crate) metrics_only: bool,
    pub(crate) cancel_is_failure: bool,
}

pub(crate) type Listener = Box<dyn Fn(State, State) + Send + Sync>;

/// Everything the cold transitions read and write, behind one mutex.
///
/// The first version kept these in separate atomics and raced: every caller
/// that saw an expired `Open` reset the probe count before its
/// compare-and-swap, so k racing callers could admit k × n probes, and a
/// late one could turn a fresh `Open` straight into half-open. Transitions
/// are rare (a few per outage), so a lock costs nothing that matters and
/// makes each one a plain sequence of assignments.
#[derive(Debug, Default)]
struct Cold {
    /// Which half-open round the probes belong to: a probe from an earlier
    /// round that completes late must not count in this one.
    round: u64,
    half_open_since: u64,
    probes_left: u32,
    probes_done: u32,
    probes_failed: u32,
    probes_slow: u32,
    consecutive_opens: u32,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    window: Window,
    /// Read on every call (the hot path); written only under `cold`.
    state: AtomicU8,
    /// When an `Open` breaker may go half-open, in nanoseconds since
    /// `epoch`: read without the lock by rejected calls; written under it.
    open_until: AtomicU64,
    /// Mirrors `Cold::consecutive_opens` for snapshots.
    consecutive_opens: AtomicU32,
    cold: Mutex<Cold>,
    epoch: Instant,
    rng: Draw,
    listener: Option<Listener>,
    pub(crate) name: LayerName,
    pub(crate) rejected: AtomicU64,
    /// Times the breaker opened.
    pub(crate) opened: AtomicU64,
    /// Completed calls that found the window past a threshold in
    /// metrics-only mode: each would have tripped the breaker.
    pub(crate) shadow_tripped: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Metrics,
}

/// What `call` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: record the outcome.
    Closed,
    /// Disabled: no recording.
    Pass,
    /// A half-open probe of generation `round`.
    Probe(u64),
    /// Rejected; retry after this long if known.
    Reject(Option<Duration>),
}

/// A state change made under the lock, announced after it is released (a
/// listener may call back into the handle).
type Change = Option<(State, State)>;

impl Shared {
    pub(crate) fn new(
        config: Config,
        window: Window,
        listener: Option<Listener>,
        name: LayerName,
        seed: u64,
    ) -> Self {
        Shared {
            config,
            window,
            state: AtomicU8::new(State::Closed.code()),
            open_until: AtomicU64::new(0),
            consecutive_opens: AtomicU32::new(0),
            cold: Mutex::new(Cold::default()),
            epoch: Instant::now(),
            rng: Draw::new(seed),
            listener,
            name,
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            shadow_tripped: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Metrics::default(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Acquire))
    }

    /// Whether completed calls need a timestamp (slow calls, time windows).
    pub(crate) fn needs_clock(&self) -> bool {
        self.config.slow_call.is_some() || matches!(self.window, Window::Time(_))
    }

    pub(crate) fn counts(&self) -> Counts {
        match &self.window {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(self.now()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cold> {
        // Every critical section below completes its assignments before
        // anything that could panic, so a poisoned lock is still consistent.
        self.cold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the state; caller holds the lock.
    fn set(&self, _cold: &mut Cold, to: State) -> Change {
        let from = State::from_u8(self.state.swap(to.code(), Release));
        (from != to).then_some((from, to))
    }

    /// Sets the state whatever it was (the handle's manual controls).
    pub(crate) fn force(&self, to: State) {
        let change = {
            let mut cold = self.lock();
            if to == State::Closed {
                // Clear before closing: a failure recorded in between must
                // not land in the outage's window and trip the breaker again.
                self.reset_window();
                cold.consecutive_opens = 0;
                self.consecutive_opens.store(0, Release);
            }
            self.set(&mut cold, to)
        };
        self.announce(change);
    }

    fn announce(&self, change: Change) {
        let Some((from, to)) = change else { return };
        tracing::info!(layer = %self.name, %from, %to, "circuit breaker state changed");
        if to == State::Open {
            self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(listener) = &self.listener {
            listener(from, to);
        }
    }

    fn reset_window(&self) {
        match &self.window {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }

    /// Decides a new call.
    #[inline]
    pub(crate) fn admit(&self) -> Admit {
        match self.state() {
            State::Closed => Admit::Closed,
            State::Disabled => Admit::Pass,
            State::ForcedOpen => Admit::Reject(None),
            State::Open | State::HalfOpen => self.admit_cold(),
        }
    }

    #[cold]
    fn admit_cold(&self) -> Admit {
        let now = self.now();
        // Rejected calls while open read one atomic, no lock.
        if self.state() == State::Open {
            let until = self.open_until.load(Acquire);
            if now < until {
                return Admit::Reject(Some(Duration::from_nanos(until - now)));
            }
        }
        let (admit, change) = {
            let mut cold = self.lock();
            self.admit_locked(&mut cold, now)
        };
        self.announce(change);
        admit
    }

    fn admit_locked(&self, cold: &mut Cold, now: u64) -> (Admit, Change) {
        match self.state() {
            State::Closed => (Admit::Closed, None),
            State::Disabled => (Admit::Pass, None),
            State::ForcedOpen => (Admit::Reject(None), None),
            State::Open => {
                let until = self.open_until.load(Acquire);
                if now < until {
                    return (Admit::Reject(Some(Duration::from_nanos(until - now))), None);
                }
                // Open time is over: this caller turns the breaker half-open
                // and takes the first probe. No background task, no timer.
                cold.round = cold.round.wrapping_add(1);
                cold.half_open_since = now;
                cold.probes_left = self.config.half_open_calls - 1;
                cold.probes_done = 0;
                cold.probes_failed = 0;
                cold.probes_slow = 0;
                let change = self.set(cold, State::HalfOpen);
                (Admit::Probe(cold.round), change)
            }
            State::HalfOpen => {
                if cold.probes_left > 0 {
                    cold.probes_left -= 1;
                    return (Admit::Probe(cold.round), None);
                }
                // Every probe slot is taken. A probe that never completes
                // must not hold the breaker half-open forever.
                if now.saturating_sub(cold.half_open_since)
                    >= duration_nanos(self.config.half_open_max_wait)
                {
                    let change = self.open(cold, now);
                    let until = self.open_until.load(Acquire);
                    return (
                        Admit::Reject(Some(Duration::from_nanos(until.saturating_sub(now)))),
                        change,
                    );
                }
                (Admit::Reject(None), None)
            }
        }
    }

    /// The open time after `consecutive` re-opens in a row: grown by the
    /// backoff, jittered, and never above the backoff's `max`.
    fn open_time(&self, consecutive: u32) -> Duration {
        let base = self.config.open_duration;
        let Some(b) = self.config.backoff else { return base };
        let grown = base.as_secs_f64() * b.multiplier.powi(consecutive.min(64) as i32);
        let spread =
            if b.jitter > 0.0 { (self.rng.next_f64() * 2.0 - 1.0) * b.jitter } else { 0.0 };
        // Jitter first, then the cap: the documented maximum is a maximum.
        let secs = (grown * (1.0 + spread)).min(b.max.as_secs_f64()).max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(b.max).min(b.max)
    }

    /// Opens the breaker; caller holds the lock.
    fn open(&self, cold: &mut Cold, now: u64) -> Change {
        let until = now.saturating_add(duration_nanos(self.open_time(cold.consecutive_opens)));
        // Publish the open time before the state, so nobody reads Open with
        // a stale deadline.
        self.open_until.store(until, Release);
        cold.consecutive_opens = cold.consecutive_opens.saturating_add(1);
        self.consecutive_opens.store(cold.consecutive_opens, Release);
        self.set(cold, State::Open)
    }

    fn mark(&self, failed: bool, start: Option<u64>, now: Option<u64>) -> Mark {
        let slow = match (self.config.slow_call, start, now) {
            (Some(limit), Some(start), Some(now)) => {
                now.saturating_sub(start) >= duration_nanos(limit)
            }
            _ => false,
        };
        Mark { failed, slow }
    }

    /// A closed-state call completed.
    #[inline]
    pub(crate) fn record_closed(&self, failed: bool, start: Option<u64>) {
        let now = start.map(|_| self.now());
        let mark = self.mark(failed, start, now);
        self.record_closed_mark(mark, now);
    }

    /// A closed-state call ended with `mark` (at `now`, if read).
    #[inline]
    pub(crate) fn record_closed_mark(&self, mark: Mark, now: Option<u64>) {
        let counts = match &self.window {
            Window::Count(w) => w.record(mark),
            Window::Time(w) => w.record(now.unwrap_or_else(|| self.now()), mark),
        };
        if !(mark.failed || mark.slow) {
            return;
        }
        let Some(c) = counts else { return };
        if c.calls >= self.config.minimum_calls
            && (c.failure_rate() >= self.config.failure_rate
                || c.slow_rate() >= self.config.slow_rate)
            && self.state() == State::Closed
        {
            if self.config.metrics_only {
                self.shadow_trip(c);
            } else {
                self.trip(c, now.unwrap_or_else(|| self.now()));
            }
        }
    }

    /// Metrics-only mode: the breaker would trip now, and does not.
    #[cold]
    fn shadow_trip(&self, c: Counts) {
        self.shadow_tripped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            layer = %self.name,
            failure_rate = c.failure_rate(),
            slow_rate = c.slow_rate(),
            calls = c.calls,
            "circuit breaker would trip (metrics only)"
        );
    }

    #[cold]
    fn trip(&self, c: Counts, now: u64) {
        let change = {
            let mut cold = self.lock();
            // Somebody else may have tripped it (or forced it) meanwhile.
            if self.state() != State::Closed {
                return;
            }
            self.open(&mut cold, now)
        };
        tracing::warn!(
            layer = %self.name,
            failure_rate = c.failure_rate(),
            slow_rate = c.slow_rate(),
            calls = c.calls,
            "circuit breaker tripped"
        );
        self.announce(change);
    }

    /// A half-open probe of round `round` completed.
    pub(crate) fn record_probe(&self, round: u64, failed: bool, start: Option<u64>) {
        let now = self.now();
        let mark = self.mark(failed, start, Some(now));
        self.record_probe_mark(round, mark, now);
    }

    /// A half-open probe of round `round` ended with `mark`.
    pub(crate) fn record_probe_mark(&self, round: u64, mark: Mark, now: u64) {
        let change = {
            let mut cold = self.lock();
            if cold.round != round || self.state() != State::HalfOpen {
                return; // a late probe from an earlier round
            }
            cold.probes_failed += u32::from(mark.failed);
            cold.probes_slow += u32::from(mark.slow);
            cold.probes_done += 1;
            let n = self.config.half_open_calls;
            if cold.probes_done < n {
                return;
            }
            let failure_rate = f64::from(cold.probes_failed) / f64::from(n);
            let slow_rate = f64::from(cold.probes_slow) / f64::from(n);
            if failure_rate >= self.config.failure_rate || slow_rate >= self.config.slow_rate {
                self.open(&mut cold, now)
            } else {
                // Clear the outage's window *before* closing: a failure
                // recorded in between would otherwise meet the old failures
                // and trip the breaker again at once.
                self.reset_window();
                cold.consecutive_opens = 0;
                self.consecutive_opens.store(0, Release);
                self.set(&mut cold, State::Closed)
            }
        };
        self.announce(change);
    }

    /// A probe ended without an outcome (the client left, or the classifier
    /// ignored it): its slot goes back.
    pub(crate) fn return_probe(&self, round: u64) {
        let mut cold = self.lock();
        if cold.round == round && self.state() == State::HalfOpen {
            cold.probes_left += 1;
        }
    }

    pub(crate) fn time_until_half_open(&self) -> Option<Duration> {
        (self.state() == State::Open)
            .then(|| Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(self.now())))
    }

    pub(crate) fn consecutive_opens(&self) -> u32 {
        self.consecutive_opens.load(Acquire)
    }

    #[cfg(test)]
    pub(crate) fn probes_left(&self) -> u32 {
        self.lock().probes_left
    }
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::window::CountWindow;

    fn shared(half_open_calls: u32) -> Shared {
        let config = Config {
            failure_rate: 0.5,
            slow_rate: 1.0,
            slow_call: None,
            minimum_calls: 1,
            open_duration: Duration::from_nanos(1),
            backoff: None,
            half_open_calls,
            half_open_max_wait: Duration::from_secs(3600),
            metrics_only: false,
            cancel_is_failure: false,
        };
        Shared::new(config, Window::Count(CountWindow::new(10)), None, "t".into(), 1)
    }

    /// Many threads find the open time over at once: exactly
    /// `half_open_calls` probes are admitted, in one round. The first
    /// version reset the probe count in every racing caller.
    #[test]
    fn racing_callers_admit_exactly_n_probes() {
        for n in [1u32, 3, 8] {
            for _ in 0..200 {
                let shared = Arc::new(shared(n));
                shared.force(State::Open);
                shared.open_until.store(0, Release);
                let threads = 8;
                let barrier = Arc::new(Barrier::new(threads));
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let (shared, barrier) = (Arc::clone(&shared), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            barrier.wait();
                            (0..4).map(|_| shared.admit()).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let admits: Vec<Admit> =
                    handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
                let probes: Vec<u64> = admits
                    .iter()
                    .filter_map(|a| if let Admit::Probe(r) = a { Some(*r) } else { None })
                    .collect();
                assert_eq!(probes.len(), n as usize, "{admits:?}");
                assert!(probes.iter().all(|&r| r == probes[0]), "one round: {probes:?}");
                assert_eq!(shared.probes_left(), 0);
                assert_eq!(shared.state(), State::HalfOpen);
            }
        }
    }

    /// A probe that completes in a later round, or after the breaker
    /// closed, changes nothing.
    #[test]
    fn late_probes_are_ignored() {
        let shared = shared(1);
        shared.force(State::Open);
        shared.open_until.store(0, Release);
        let Admit::Probe(first) = shared.admit() else { panic!("a probe") };
        shared.record_probe(first, true, None);
        assert_eq!(shared.state(), State::Open);
        shared.open_until.store(0, Release);
        let Admit::Probe(second) = shared.admit() else { panic!("a probe") };
        assert_ne!(first, second);
        shared.record_probe(first, false, None);
        assert_eq!(shared.state(), State::HalfOpen, "a late probe of round 1");
        shared.record_probe(second, false, None);
        assert_eq!(shared.state(), State::Closed);
        assert_eq!(shared.consecutive_opens(), 0);
    }
}
