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

use backpressure::core::BoxError;
use tokio::{
    sync::Semaphore,
    time::{Instant, sleep, sleep_until},
};
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
    /// Whether this is critical traffic (for priority scenarios).
    pub critical: bool,
}

#[derive(Debug)]
struct BackendState {
    config: BackendConfig,
    pool: Semaphore,
    waiting: AtomicUsize,
    served: AtomicU64,
    wasted: AtomicU64,
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
                served: AtomicU64::new(0),
                wasted: AtomicU64::new(0),
            }),
        }
    }

    /// The backend's configuration.
    pub fn config(&self) -> &BackendConfig {
        &self.state.config
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
            state.waiting.fetch_add(1, Ordering::Relaxed);
            let permit = state.pool.acquire().await;
            let waiting = state.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
            let _permit = permit.map_err(|_| "backend pool closed")?;
            let cfg = &state.config;
            let over = waiting.saturating_sub(cfg.knee) as f64;
            let slowdown = (1.0 + cfg.contention * over / cfg.pool as f64).min(cfg.max_slowdown);
            sleep(cfg.service_time.mul_f64(slowdown)).await;
            state.served.fetch_add(1, Ordering::Relaxed);
            if Instant::now() > job.client_deadline {
                state.wasted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }
}

/// The open-loop load: Poisson arrivals at a fixed rate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Mean arrivals per second.
    pub rate: f64,
    /// How long arrivals continue.
    pub duration: Duration,
    /// How long a client waits for an answer before giving up.
    pub client_timeout: Duration,
    /// Seed of the arrival process.
    pub seed: u64,
    /// Requests arrive in groups of this many at the same instant (1: plain
    /// Poisson); the groups are Poisson at `rate / burst`, so the mean rate
    /// is unchanged.
    pub burst: u32,
}

/// What happened to the requests of one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Successful answers that arrived before the client gave up.
    pub ok: u64,
    /// Requests that failed fast with an error before their client gave up:
    /// a layer's rejection (`Rejected`, or tower's `Overloaded`).
    pub rejected: u64,
    /// Requests answered (or rejected) only after their client gave up.
    pub timed_out: u64,
    /// Latencies of the successes, sorted.
    pub latencies: Vec<Duration>,
    /// Most requests outstanding at once (in the stack and the backend).
    pub peak_outstanding: usize,
    /// Queries the backend served after their client had left.
    pub wasted: u64,
    /// Simulated seconds the arrivals lasted.
    pub seconds: f64,
}

impl Report {
    /// Successes per second.
    pub fn goodput(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// The `q`-quantile (0..=1) of success latency.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[idx]
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    rejected: u64,
    timed_out: u64,
    latencies: Vec<Duration>,
}

/// Drives `stack` (which must end in `backend`) with open-loop load and
/// reports what the clients saw. Waits for every request to finish or time
/// out before returning.
pub async fn run<S>(stack: S, backend: &Backend, load: &LoadConfig) -> Report
where
    S: Service<Job, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut peak = 0usize;
    let mut rng = Rng::new(load.seed);
    let start = Instant::now();
    let end = start + load.duration;
    let wasted_before = backend.wasted();
    let mut next = start;
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let burst = load.burst.max(1);
    let mut in_group = burst;
    loop {
        if in_group == burst {
            next += rng.exp_delay(load.rate / f64::from(burst));
            in_group = 0;
        }
        in_group += 1;
        if next >= end {
            break;
        }
        sleep_until(next).await;
        sent += 1;
        let mut svc = stack.clone();
        let tally = Arc::clone(&tally);
        let outstanding = Arc::clone(&outstanding);
        peak = peak.max(outstanding.fetch_add(1, Ordering::Relaxed) + 1);
        let client_timeout = load.client_timeout;
        // The server side runs each request to completion, as a real server
        // does once the request has arrived: a client giving up does not
        // cancel the work it caused. The client's view is decided by when
        // the answer comes back.
        tasks.spawn(async move {
            let arrived = Instant::now();
            let job = Job { client_deadline: arrived + client_timeout, critical: false };
            let result = async {
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(job).await
            }
            .await;
            let latency = arrived.elapsed();
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                _ if latency > client_timeout => t.timed_out += 1,
                Ok(()) => {
                    t.ok += 1;
                    t.latencies.push(latency);
                }
                Err(_) => t.rejected += 1,
            }
        });
        // Reap finished tasks as we go so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    t.latencies.sort_unstable();
    Report {
        sent,
        ok: t.ok,
        rejected: t.rejected,
        timed_out: t.timed_out,
        latencies: t.latencies,
        peak_outstanding: peak,
        wasted: backend.wasted() - wasted_before,
        seconds: load.duration.as_secs_f64(),
    }
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
                let job = Job { client_deadline: end + Duration::from_secs(3600), critical: false };
                let _ = b.call(job).await;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    (backend.served() - before) as f64 / duration.as_secs_f64()
}
