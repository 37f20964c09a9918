//! The breaker's shared state machine.

use std::{
    fmt,
    sync::atomic::{
        AtomicU8, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
        Ordering::Release,
    },
    time::Duration,
};

use backpressure_core::{Draw, LayerName};
use tokio::time::Instant;

use crate::window::{CountWindow, Counts, Mark, TimeWindow};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    fn code(self) -> u8 {
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
pub struct Backoff {
    /// Each consecutive re-open multiplies the open time by this (≥ 1).
    pub multiplier: f64,
    /// The open time never exceeds this.
    pub max: Duration,
    /// Random spread, as a fraction of the open time (0..1), so a fleet of
    /// clients does not probe in step.
    pub jitter: f64,
}

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
}

pub(crate) type Listener = Box<dyn Fn(State, State) + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) config: Config,
    window: Window,
    state: AtomicU8,
    epoch: Instant,
    open_until: AtomicU64,
    half_open_since: AtomicU64,
    probes_left: AtomicU32,
    probe_gen: AtomicU64,
    probes_done: AtomicU32,
    probes_failed: AtomicU32,
    probes_slow: AtomicU32,
    consecutive_opens: AtomicU32,
    rng: Draw,
    listener: Option<Listener>,
    pub(crate) name: LayerName,
    pub(crate) rejected: AtomicU64,
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
            state: AtomicU8::new(0),
            epoch: Instant::now(),
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            probes_left: AtomicU32::new(0),
            probe_gen: AtomicU64::new(0),
            probes_done: AtomicU32::new(0),
            probes_failed: AtomicU32::new(0),
            probes_slow: AtomicU32::new(0),
            consecutive_opens: AtomicU32::new(0),
            rng: Draw::new(seed),
            listener,
            name,
            rejected: AtomicU64::new(0),
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

    fn transition(&self, from: State, to: State) -> bool {
        if self.state.compare_exchange(from.code(), to.code(), AcqRel, Acquire).is_err() {
            return false;
        }
        self.announce(from, to);
        true
    }

    /// Sets the state whatever it was (the handle's manual controls).
    pub(crate) fn force(&self, to: State) {
        let from = State::from_u8(self.state.swap(to.code(), AcqRel));
        if to == State::Closed {
            self.reset_window();
            self.consecutive_opens.store(0, Relaxed);
        }
        if from != to {
            self.announce(from, to);
        }
    }

    fn announce(&self, from: State, to: State) {
        tracing::info!(layer = %self.name, %from, %to, "circuit breaker state changed");
        crate::metrics::state(&self.name, to);
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
            State::Open => self.admit_open(),
            State::HalfOpen => self.admit_half_open(self.now()),
        }
    }

    #[cold]
    fn admit_open(&self) -> Admit {
        let now = self.now();
        let until = self.open_until.load(Acquire);
        if now < until {
            return Admit::Reject(Some(Duration::from_nanos(until - now)));
        }
        // Open time is over: the first caller turns the breaker half-open.
        // No background task, no timer.
        if self.state.load(Acquire) == State::Open.code() {
            self.start_half_open(now);
        }
        self.admit_half_open(now)
    }

    fn start_half_open(&self, now: u64) {
        // Set the round up before publishing the state.
        self.probe_gen.fetch_add(1, AcqRel);
        self.probes_done.store(0, Relaxed);
        self.probes_failed.store(0, Relaxed);
        self.probes_slow.store(0, Relaxed);
        self.half_open_since.store(now, Relaxed);
        self.probes_left.store(self.config.half_open_calls, Release);
        self.transition(State::Open, State::HalfOpen);
    }

    #[cold]
    fn admit_half_open(&self, now: u64) -> Admit {
        if self.state() != State::HalfOpen {
            // Lost a race: decide again from the new state.
            return match self.state() {
                State::Closed => Admit::Closed,
                State::Disabled => Admit::Pass,
                State::Open => {
                    let until = self.open_until.load(Acquire);
                    Admit::Reject(Some(Duration::from_nanos(until.saturating_sub(now))))
                }
                _ => Admit::Reject(None),
            };
        }
        let round = self.probe_gen.load(Acquire);
        let mut left = self.probes_left.load(Acquire);
        while left > 0 {
            match self.probes_left.compare_exchange_weak(left, left - 1, AcqRel, Acquire) {
                Ok(_) => return Admit::Probe(round),
                Err(actual) => left = actual,
            }
        }
        // Every probe slot is taken. A probe that never completes must not
        // hold the breaker half-open forever.
        let since = self.half_open_since.load(Acquire);
        if now.saturating_sub(since) >= duration_nanos(self.config.half_open_max_wait) {
            self.reopen(now, State::HalfOpen);
        }
        Admit::Reject(None)
    }

    fn open_time(&self, consecutive: u32) -> Duration {
        let base = self.config.open_duration;
        let Some(b) = self.config.backoff else { return base };
        let grown = base.as_secs_f64() * b.multiplier.powi(consecutive.min(64) as i32);
        let capped = grown.min(b.max.as_secs_f64());
        let spread =
            if b.jitter > 0.0 { (self.rng.next_f64() * 2.0 - 1.0) * b.jitter } else { 0.0 };
        Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0))
    }

    fn reopen(&self, now: u64, from: State) {
        let consecutive = self.consecutive_opens.load(Acquire);
        let until = now.saturating_add(duration_nanos(self.open_time(consecutive)));
        // Publish the open time before the state, so nobody reads Open with
        // a stale deadline.
        self.open_until.store(until, Release);
        if self.transition(from, State::Open) {
            self.consecutive_opens.fetch_add(1, AcqRel);
        }
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
        let counts = match &self.window {
            Window::Count(w) => w.record(mark),
            Window::Time(w) => w.record(now.unwrap_or_else(|| self.now()), mark),
        };
        if !(mark.failed || mark.slow) || self.config.metrics_only {
            return;
        }
        let Some(c) = counts else { return };
        if c.calls >= self.config.minimum_calls
            && (c.failure_rate() >= self.config.failure_rate
                || c.slow_rate() >= self.config.slow_rate)
            && self.state() == State::Closed
        {
            tracing::warn!(
                layer = %self.name,
                failure_rate = c.failure_rate(),
                slow_rate = c.slow_rate(),
                calls = c.calls,
                "circuit breaker tripped"
            );
            self.reopen(now.unwrap_or_else(|| self.now()), State::Closed);
        }
    }

    /// A half-open probe of round `round` completed.
    pub(crate) fn record_probe(&self, round: u64, failed: bool, start: Option<u64>) {
        if self.probe_gen.load(Acquire) != round || self.state() != State::HalfOpen {
            return; // a late probe from an earlier round
        }
        let now = self.now();
        let mark = self.mark(failed, start, Some(now));
        if mark.failed {
            self.probes_failed.fetch_add(1, AcqRel);
        }
        if mark.slow {
            self.probes_slow.fetch_add(1, AcqRel);
        }
        let done = self.probes_done.fetch_add(1, AcqRel) + 1;
        let n = self.config.half_open_calls;
        if done < n {
            return;
        }
        let failure_rate = f64::from(self.probes_failed.load(Acquire)) / f64::from(n);
        let slow_rate = f64::from(self.probes_slow.load(Acquire)) / f64::from(n);
        if failure_rate >= self.config.failure_rate || slow_rate >= self.config.slow_rate {
            self.reopen(now, State::HalfOpen);
        } else if self.transition(State::HalfOpen, State::Closed) {
            self.reset_window();
            self.consecutive_opens.store(0, Relaxed);
        }
    }

    /// A probe ended without an outcome (dropped, or ignored by the
    /// classifier): its slot goes back.
    pub(crate) fn return_probe(&self, round: u64) {
        if self.probe_gen.load(Acquire) == round && self.state() == State::HalfOpen {
            self.probes_left.fetch_add(1, AcqRel);
        }
    }

    pub(crate) fn time_until_half_open(&self) -> Option<Duration> {
        (self.state() == State::Open)
            .then(|| Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(self.now())))
    }

    pub(crate) fn consecutive_opens(&self) -> u32 {
        self.consecutive_opens.load(Acquire)
    }
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
