//! A deterministic simulation of a slow backend under open-loop load.
//!
//! Run it on a runtime built with `start_paused(true)` (see [`runtime`]): the
//! clock then only moves when every task is waiting, so a minute of traffic
//! takes a second of wall time and every run with the same seed is the same.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use backpressure::{
    core::{BoxError, Priority, RejectKind, Rejected},
    retry::{Backoff, FnPolicy, RetryBudget, RetryLayer, Verdict},
    timeout::TimeoutLayer,
};
use tokio::{
    sync::Semaphore,
    time::{Instant, sleep, sleep_until},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_service::Service;

/// A current-thread runtime with a paused clock from its first instant.
///
/// Pausing at build time matters: a runtime paused *after* it started rounds
/// timers up by a millisecond, and a simulated 10 ms query then takes 11 ms.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// A small, seeded pseudo-random generator (SplitMix64): deterministic runs
/// without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `(0, 1]`.
    pub fn next_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// An exponentially distributed delay with the given mean rate per second
    /// (the gaps between Poisson arrivals).
    pub fn exp_delay(&mut self, rate_per_sec: f64) -> Duration {
        Duration::from_secs_f64(-self.next_f64().ln() / rate_per_sec)
    }
}

/// The backend's shape: a connection pool with a fixed per-query cost that
/// grows when the pool is over-committed.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Connections in the pool: queries running at once.
    pub pool: usize,
    /// Cost of one query on an uncontended pool.
    pub service_time: Duration,
    /// Waiters the pool absorbs at no extra cost (ordinary driver queueing).
    pub knee: usize,
    /// Extra cost per query for each waiter beyond `knee`, as a fraction of
    /// `service_time` per pool's worth of such waiters (lock and cache
    /// contention, context switches): 0 means no congestion collapse.
    pub contention: f64,
    /// The cost never exceeds `service_time × max_slowdown`.
    pub max_slowdown: f64,
    /// Periods (from the start of the run) during which every query costs
    /// `factor` times more: a failover, a GC storm, a noisy neighbour.
    pub slow: Vec<SlowPeriod>,
    /// Share of queries that fail (after their service time) with an error,
    /// like a handler answering 500 because of a bug: deterministic, every
    /// query's fate drawn from its arrival number.
    pub error_rate: f64,
    /// From this time on (from the start of the run), queries never answer:
    /// a dependency that hangs rather than refuses. They hold no connection.
    pub hang_from: Option<Duration>,
}

/// A period of reduced backend capacity.
#[derive(Debug, Clone, Copy)]
pub struct SlowPeriod {
    /// Start, from the beginning of the run.
    pub from: Duration,
    /// End, from the beginning of the run.
    pub to: Duration,
    /// Cost multiplier while it lasts (3.0: a third of the capacity).
    pub factor: f64,
}

impl BackendConfig {
    /// The scenario of the project: 20 connections at 10 ms (2,000 queries/s);
    /// past 20 waiters each query costs 10 % more per 20 further waiters, up
    /// to 3× under heavy over-commit.
    pub fn database() -> Self {
        BackendConfig {
            pool: 20,
            service_time: Duration::from_millis(10),
            knee: 20,
            contention: 0.1,
            max_slowdown: 3.0,
            slow: Vec::new(),
            error_rate: 0.0,
            hang_from: None,
        }
    }

    /// An endpoint that is slow but not a bottleneck: every request takes
    /// 200 ms however many run at once (a handler waiting on a remote API),
    /// with room for 2,000 at once (10,000 requests/s).
    pub fn slow_parallel() -> Self {
        BackendConfig {
            pool: 2_000,
            service_time: Duration::from_millis(200),
            knee: 2_000,
            contention: 0.0,
            max_slowdown: 1.0,
            ..Self::database()
        }
    }

    /// The nominal capacity in queries per second.
    pub fn capacity(&self) -> f64 {
        self.pool as f64 / self.service_time.as_secs_f64()
    }
}

/// One simulated request.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// When the client stops waiting for the answer.
    pub client_deadline: Instant,
    /// Critical traffic (the priority scenario).
    pub critical: bool,
    /// Sheddable traffic (the priority scenario's flood).
    pub sheddable: bool,
}

impl Job {
    /// The request's priority: sheddable, critical, or the default.
    pub fn priority(&self) -> Priority {
        if self.sheddable { Priority::Sheddable } else { Priority::Critical }
    }
}

#[derive(Debug)]
struct BackendState {
    config: BackendConfig,
    pool: Semaphore,
    waiting: AtomicUsize,
    arrived: AtomicU64,
    hung: AtomicU64,
    errors: AtomicU64,
    served: AtomicU64,
    wasted: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

/// The simulated backend: a `tower::Service<Job>` with an unbounded internal
/// queue in front of its pool, like a real database driver's.
#[derive(Debug, Clone)]
pub struct Backend {
    state: Arc<BackendState>,
}

impl Backend {
    /// A backend of the given shape.
    pub fn new(config: BackendConfig) -> Self {
        let pool = Semaphore::new(config.pool);
        Backend {
            state: Arc::new(BackendState {
                config,
                pool,
                waiting: AtomicUsize::new(0),
                arrived: AtomicU64::new(0),
                hung: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                served: AtomicU64::new(0),
                wasted: AtomicU64::new(0),
                epoch: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The backend's configuration.
    pub fn config(&self) -> &BackendConfig {
        &self.state.config
    }

    /// Starts the backend's clock for its slow periods (the first call wins;
    /// [`run`] calls it as the load starts).
    pub fn start_clock(&self) {
        self.state.epoch.get_or_init(Instant::now);
    }

    /// Queries that reached the backend so far (served or not yet).
    pub fn arrived(&self) -> u64 {
        self.state.arrived.load(Ordering::Relaxed)
    }

    /// Queries that reached the backend while it hung (see
    /// [`BackendConfig::hang_from`]).
    pub fn hung(&self) -> u64 {
        self.state.hung.load(Ordering::Relaxed)
    }

    /// Queries that failed with an error (see [`BackendConfig::error_rate`]).
    pub fn errors(&self) -> u64 {
        self.state.errors.load(Ordering::Relaxed)
    }

    /// Queries served so far.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// Queries served after their client had already given up: wasted capacity.
    pub fn wasted(&self) -> u64 {
        self.state.wasted.load(Ordering::Relaxed)
    }

    /// Queries waiting for a connection right now.
    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::Relaxed)
    }
}

impl Service<Job> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let n = state.arrived.fetch_add(1, Ordering::Relaxed);
            let elapsed = state.epoch.get().map(|e| e.elapsed());
            if let (Some(from), Some(t)) = (state.config.hang_from, elapsed)
                && t >= from
            {
                state.hung.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            state.waiting.fetch_add(1, Ordering::Relaxed);
            // Counted out on drop too: a query cancelled while it waits for a
            // connection (its client hung up) must not stay "waiting" and
            // slow every later query down.
            let waiter = Waiting(&state.waiting);
            let permit = state.pool.acquire().await;
            drop(waiter);
            let waiting = state.waiting.load(Ordering::Relaxed);
            let _permit = permit.map_err(|_| "backend pool closed")?;
            let cfg = &state.config;
            let over = waiting.saturating_sub(cfg.knee) as f64;
            let slowdown = (1.0 + cfg.contention * over / cfg.pool as f64).min(cfg.max_slowdown);
            let period =
                state.epoch.get().map(|e| e.elapsed()).and_then(|t| {
                    cfg.slow.iter().find(|p| p.from <= t && t < p.to).map(|p| p.factor)
                });
            sleep(cfg.service_time.mul_f64(slowdown * period.unwrap_or(1.0))).await;
            state.served.fetch_add(1, Ordering::Relaxed);
            if Instant::now() > job.client_deadline {
                state.wasted.fetch_add(1, Ordering::Relaxed);
            }
            if cfg.error_rate > 0.0 && Rng::new(n).next_f64() <= cfg.error_rate {
                state.errors.fetch_add(1, Ordering::Relaxed);
                return Err("internal server error (a handler bug)".into());
            }
            Ok(())
        })
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the simulated clients behave when a request fails or times out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clients {
    /// One attempt; the client gives up after `client_timeout`.
    Patient,
    /// Up to `attempts` attempts, each abandoned after `client_timeout`,
    /// retried at once on a rejection or a timeout, no budget: the retry
    /// storm.
    NaiveRetry {
        /// Attempts per request, the first included.
        attempts: u32,
    },
    /// The same attempts through this project's `RetryLayer`: a retry
    /// budget (`ratio` of requests + 1/s), full-jitter backoff, never past
    /// the request's total deadline (`attempts × client_timeout`).
    BudgetRetry {
        /// Attempts per request, the first included.
        attempts: u32,
        /// Retries allowed per request.
        ratio: f64,
    },
}

/// The open-loop load: Poisson arrivals at a rate that may change in steps.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Mean arrivals per second (before `steps`).
    pub rate: f64,
    /// How long arrivals continue.
    pub duration: Duration,
    /// How long a client waits for one attempt's answer before giving up.
    pub client_timeout: Duration,
    /// Seed of the arrival process.
    pub seed: u64,
    /// Requests arrive in groups of this many at the same instant (1: plain
    /// Poisson); the groups are Poisson at `rate / burst`, so the mean rate
    /// is unchanged.
    pub burst: u32,
    /// `(from, multiplier)`: from that time on, the rate is `rate ×
    /// multiplier` (the step scenario). Empty: constant.
    pub steps: Vec<(Duration, f64)>,
    /// The share of requests that are critical; the rest are sheddable when
    /// this is above zero (the priority scenario), default priority when it
    /// is zero.
    pub critical_share: f64,
    /// How clients retry.
    pub clients: Clients,
    /// `(share, within)`: that share of clients hang up at a uniformly random
    /// moment within `within` of sending, which cancels the server's work
    /// for them (a real server drops the request's future when its
    /// connection closes). Patient clients only.
    pub hangups: Option<(f64, Duration)>,
}

impl LoadConfig {
    /// Plain Poisson arrivals at `rate` for `duration`, clients giving up
    /// after 1 s, no retries.
    pub fn poisson(rate: f64, duration: Duration, seed: u64) -> Self {
        LoadConfig {
            rate,
            duration,
            client_timeout: Duration::from_secs(1),
            seed,
            burst: 1,
            steps: Vec::new(),
            critical_share: 0.0,
            clients: Clients::Patient,
            hangups: None,
        }
    }

    fn rate_at(&self, t: Duration) -> f64 {
        let m = self.steps.iter().rev().find(|(from, _)| *from <= t).map_or(1.0, |s| s.1);
        self.rate * m
    }
}

/// How one request ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully before the client gave up.
    Ok,
    /// Turned away fast with an error (a layer's rejection).
    Rejected,
    /// No answer before the client gave up.
    TimedOut,
    /// The client hung up before the answer (see [`LoadConfig::hangups`]).
    HungUp,
}

/// One finished request: when it finished, how long it took, how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// Seconds from the start of the run to the client's answer.
    pub at: f32,
    /// The client's wait.
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// Whether the request was critical.
    pub critical: bool,
}

/// What happened to the requests of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests sent (by the application: retries not counted).
    pub sent: u64,
    /// Successful answers that arrived before the client gave up.
    pub ok: u64,
    /// Requests that failed fast with an error before their client gave up:
    /// a layer's rejection (`Rejected`, or tower's `Overloaded`).
    pub rejected: u64,
    /// Requests answered (or rejected) only after their client gave up.
    pub timed_out: u64,
    /// Requests whose client hung up first (see [`LoadConfig::hangups`]).
    pub hung_up: u64,
    /// Latencies of the successes, sorted.
    pub latencies: Vec<Duration>,
    /// Most requests outstanding at the server at once (in the stack's
    /// queue and the backend).
    pub peak_outstanding: usize,
    /// Attempts that reached the server (requests plus retries).
    pub attempts: u64,
    /// Queries that reached the backend.
    pub backend_arrived: u64,
    /// Queries that reached it while it hung.
    pub backend_hung: u64,
    /// Queries it failed with an error.
    pub backend_errors: u64,
    /// Queries the backend served after their client had left.
    pub wasted: u64,
    /// Queries the backend served.
    pub served: u64,
    /// Critical requests sent and answered in time.
    pub critical: (u64, u64),
    /// Peak heap growth during the run, in bytes: the stack's state, its
    /// queue, the requests in flight (each a task) and the backend's
    /// driver queue; the lab's own record of the requests is allocated
    /// beforehand. 0 when the counting allocator of [`crate::alloc`] is not
    /// installed.
    pub peak_heap: usize,
    /// Every request's end, in completion order.
    pub events: Vec<Event>,
    /// `(seconds, limit)` samples of the concurrency limit, every 250 ms,
    /// when the stack has one.
    pub limits: Vec<(f32, usize)>,
    /// Simulated seconds the arrivals lasted.
    pub seconds: f64,
}

/// Per-interval figures of a run (see [`Report::series`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Interval {
    /// Start of the interval, in seconds.
    pub start: f32,
    /// Successes per second.
    pub goodput: f64,
    /// p99 of the successes' latency.
    pub p99: Duration,
    /// The concurrency limit at the end of the interval (0 if unknown).
    pub limit: usize,
}

impl Report {
    /// Successes per second.
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// The `q`-quantile (0..=1) of success latency.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }

    /// The share of critical requests answered in time (1 when none were sent).
    pub fn critical_success(&self) -> f64 {
        if self.critical.0 == 0 { 1.0 } else { self.critical.1 as f64 / self.critical.0 as f64 }
    }

    /// The share of served queries whose client had already left.
    pub fn wasted_share(&self) -> f64 {
        if self.served == 0 { 0.0 } else { self.wasted as f64 / self.served as f64 }
    }

    /// The run cut into intervals of `width` seconds, by completion time.
    pub fn series(&self, width: f32) -> Vec<Interval> {
        let n = ((self.seconds as f32) / width).ceil().max(1.0) as usize;
        let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); n];
        let mut out: Vec<Interval> =
            (0..n).map(|i| Interval { start: i as f32 * width, ..Interval::default() }).collect();
        for e in &self.events {
            let i = ((e.at / width) as usize).min(n - 1);
            match e.outcome {
                Outcome::Ok => {
                    out[i].goodput += 1.0;
                    lat[i].push(e.latency);
                }
                Outcome::Rejected | Outcome::TimedOut | Outcome::HungUp => {}
            }
        }
        for (i, iv) in out.iter_mut().enumerate() {
            iv.goodput /= f64::from(width);
            lat[i].sort_unstable();
            iv.p99 = quantile(&lat[i], 0.99);
            let end = iv.start + width;
            iv.limit = self.limits.iter().take_while(|(t, _)| *t <= end).last().map_or(0, |l| l.1);
        }
        out
    }
}

/// The `q`-quantile (0..=1) of sorted durations; zero when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx]
}

/// Something to sample during a run (the concurrency limit).
pub type Probe = Arc<dyn Fn() -> usize + Send + Sync>;

/// Runs server work to completion whatever the client does, as a real
/// server does once a request has arrived, and gives the client its answer
/// or, after `client_timeout`, a timeout. Counts attempts and the work
/// outstanding at the server.
#[derive(Clone)]
struct Detach<S> {
    server: S,
    client_timeout: Duration,
    attempts: Arc<AtomicU64>,
    outstanding: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct ClientGaveUp;

impl std::fmt::Display for ClientGaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client gave up on this attempt")
    }
}

impl std::error::Error for ClientGaveUp {}

impl<S> Service<Job> for Detach<S>
where
    S: Service<Job, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut job: Job) -> Self::Future {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        job.client_deadline = now + self.client_timeout;
        let n = self.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        let (server, outstanding) = (self.server.clone(), Arc::clone(&self.outstanding));
        let work = tokio::spawn(async move {
            let result = server.oneshot(job).await;
            outstanding.fetch_sub(1, Ordering::Relaxed);
            result
        });
        let deadline = job.client_deadline;
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, work).await {
                Ok(Ok(result)) => result,
                Ok(Err(join)) => Err(join.into()),
                Err(_) => Err(ClientGaveUp.into()),
            }
        })
    }
}

/// Drives `stack` (which must end in `backend`) with open-loop load and
/// reports what the clients saw. Waits for every request to finish or time
/// out before returning. `probe`, if given, is sampled every 250 ms into
/// [`Report::limits`].
pub async fn run<S>(stack: S, backend: &Backend, load: &LoadConfig, probe: Option<Probe>) -> Report
where
    S: Service<Job, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // The record of every request is the lab's bookkeeping, not the
    // server's memory: sized up front, before the heap's peak is reset.
    let max_rate = load.steps.iter().map(|s| s.1).fold(1.0, f64::max) * load.rate;
    let expected = (max_rate * load.duration.as_secs_f64() * 1.2) as usize + 1024;
    let events = Arc::new(Mutex::new(Vec::<Event>::with_capacity(expected)));
    let heap_before = crate::alloc::reset_peak();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut rng = Rng::new(load.seed);
    // Hang-ups draw from their own stream: the arrivals stay the same as in
    // a run without them.
    let mut hang_rng = Rng::new(load.seed ^ 0x005E_ED0F_4A46);
    backend.start_clock();
    let start = Instant::now();
    let end = start + load.duration;
    let (arrived_before, wasted_before, served_before) =
        (backend.arrived(), backend.wasted(), backend.served());
    let limits = Arc::new(Mutex::new(Vec::new()));
    let sampler = probe.map(|probe| {
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let t = start.elapsed().as_secs_f32();
                limits.lock().unwrap_or_else(|e| e.into_inner()).push((t, probe()));
            }
        })
    });

    // The client side: a retrying client stack around the detached server,
    // or a patient client calling the server directly.
    let detach = Detach {
        server: stack.clone(),
        client_timeout: load.client_timeout,
        attempts: Arc::clone(&attempts),
        outstanding: Arc::clone(&outstanding),
        peak: Arc::clone(&peak),
    };
    let (client, patience) = match load.clients {
        Clients::Patient => (None, load.client_timeout),
        Clients::NaiveRetry { attempts: n } => {
            // The same retry layer, with a bottomless budget and no backoff
            // to speak of: exactly what a naive retry loop does.
            let budget =
                RetryBudget::builder().ratio(10.0).min_per_sec(1e6).max_saved(u32::MAX).build();
            (
                Some(retrying(detach, n, budget.expect("valid budget"), load, 1)),
                load.client_timeout * n,
            )
        }
        Clients::BudgetRetry { attempts: n, ratio } => {
            let budget = RetryBudget::builder().ratio(ratio).build().expect("valid budget");
            (Some(retrying(detach, n, budget, load, 25)), load.client_timeout * n)
        }
    };

    let mut next = start;
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let burst = load.burst.max(1);
    let mut in_group = burst;
    loop {
        if in_group == burst {
            let rate = load.rate_at(next - start);
            next += rng.exp_delay(rate / f64::from(burst));
            in_group = 0;
        }
        in_group += 1;
        if next >= end {
            break;
        }
        sleep_until(next).await;
        sent += 1;
        let critical = load.critical_share > 0.0 && rng.next_f64() < load.critical_share;
        let events = Arc::clone(&events);
        let job = Job {
            client_deadline: next + patience,
            critical,
            sheddable: load.critical_share > 0.0 && !critical,
        };
        match &client {
            None => {
                let svc = stack.clone();
                let outstanding = Arc::clone(&outstanding);
                let n = outstanding.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(n, Ordering::Relaxed);
                attempts.fetch_add(1, Ordering::Relaxed);
                let hangup = load.hangups.and_then(|(share, within)| {
                    (hang_rng.next_f64() < share).then(|| within.mul_f64(hang_rng.next_f64()))
                });
                // The server side runs each request to completion, as a real
                // server does once the request has arrived: a client giving
                // up does not cancel the work it caused. The client's view is
                // decided by when the answer comes back.
                tasks.spawn(async move {
                    let arrived = Instant::now();
                    let Some(after) = hangup else {
                        let result = svc.oneshot(job).await;
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                        record(&events, start, arrived, patience, critical, &result);
                        return;
                    };
                    // The connection closes: the server drops the request
                    // wherever it is (queued, in the backend).
                    let result = tokio::time::timeout(after, svc.oneshot(job)).await;
                    outstanding.fetch_sub(1, Ordering::Relaxed);
                    match result {
                        Ok(result) => record(&events, start, arrived, patience, critical, &result),
                        Err(_) => {
                            let now = Instant::now();
                            let event = Event {
                                at: (now - start).as_secs_f32(),
                                latency: now - arrived,
                                outcome: Outcome::HungUp,
                                critical,
                            };
                            events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
                        }
                    }
                });
            }
            Some(client) => {
                let client = client.clone();
                tasks.spawn(async move {
                    let arrived = Instant::now();
                    let result = client.oneshot(job).await;
                    record(&events, start, arrived, patience, critical, &result);
                });
            }
        }
        // Reap finished tasks as we go so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies: Vec<Duration> =
        events.iter().filter(|e| e.outcome == Outcome::Ok).map(|e| e.latency).collect();
    latencies.sort_unstable();
    let count = |o: Outcome| events.iter().filter(|e| e.outcome == o).count() as u64;
    let critical_sent = events.iter().filter(|e| e.critical).count() as u64;
    let critical_ok =
        events.iter().filter(|e| e.critical && e.outcome == Outcome::Ok).count() as u64;
    let limits = std::mem::take(&mut *limits.lock().unwrap_or_else(|e| e.into_inner()));
    Report {
        sent,
        ok: count(Outcome::Ok),
        rejected: count(Outcome::Rejected),
        timed_out: count(Outcome::TimedOut),
        hung_up: count(Outcome::HungUp),
        latencies,
        peak_outstanding: peak.load(Ordering::Relaxed),
        attempts: attempts.load(Ordering::Relaxed),
        backend_arrived: backend.arrived() - arrived_before,
        backend_hung: backend.hung(),
        backend_errors: backend.errors(),
        wasted: backend.wasted() - wasted_before,
        served: backend.served() - served_before,
        critical: (critical_sent, critical_ok),
        peak_heap: crate::alloc::peak().saturating_sub(heap_before),
        events,
        limits,
        seconds: load.duration.as_secs_f64(),
    }
}

type Client = tower::util::BoxCloneService<Job, (), BoxError>;

/// The retrying client: total deadline → retry → one detached attempt.
fn retrying<S>(
    detach: Detach<S>,
    attempts: u32,
    budget: RetryBudget,
    load: &LoadConfig,
    base_ms: u64,
) -> Client
where
    S: Service<Job, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let policy = FnPolicy::new(
        |job: &Job| Some(*job),
        |result: &Result<(), BoxError>| match result {
            Ok(()) => Verdict::Done,
            Err(_) => Verdict::Retry { not_before: None },
        },
    );
    let base = Duration::from_millis(base_ms);
    let retry = RetryLayer::builder(policy)
        .max_attempts(attempts)
        .budget(budget)
        .backoff(Backoff::new(base, base * 40).expect("valid backoff"))
        .seed(load.seed)
        .build()
        .expect("valid retry layer");
    let total = load.client_timeout * attempts;
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(total).expect("valid timeout"))
        .layer(retry)
        .service(detach);
    tower::util::BoxCloneService::new(svc)
}

fn record(
    events: &Mutex<Vec<Event>>,
    start: Instant,
    arrived: Instant,
    patience: Duration,
    critical: bool,
    result: &Result<(), BoxError>,
) {
    let now = Instant::now();
    let latency = now - arrived;
    let outcome = match result {
        _ if latency > patience => Outcome::TimedOut,
        Ok(()) => Outcome::Ok,
        Err(e) if e.is::<ClientGaveUp>() => Outcome::TimedOut,
        Err(e) if Rejected::find(e).is_some_and(|r| r.kind() == RejectKind::DeadlineExceeded) => {
            Outcome::TimedOut
        }
        Err(_) => Outcome::Rejected,
    };
    let at = (now - start).as_secs_f32();
    events.lock().unwrap_or_else(|e| e.into_inner()).push(Event { at, latency, outcome, critical });
}

/// Measures the backend's real capacity in the simulation with a closed loop
/// of `pool` clients, each sending its next query as soon as the last one
/// returns, for `duration`.
pub async fn calibrate(backend: &Backend, duration: Duration) -> f64 {
    let before = backend.served();
    let end = Instant::now() + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..backend.config().pool {
        let mut b = backend.clone();
        clients.spawn(async move {
            while Instant::now() < end {
                let job = Job {
                    client_deadline: end + Duration::from_secs(3600),
                    critical: false,
                    sheddable: false,
                };
                let _ = b.call(job).await;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    (backend.served() - before) as f64 / duration.as_secs_f64()
}
