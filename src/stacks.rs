//! The stacks the lab compares, each in front of the same simulated backend.

use std::{sync::Arc, time::Duration};

use backpressure::{
    breaker::{CircuitBreakerLayer, SlidingWindow},
    concurrency::{ConcurrencyLimitBuilder, ConcurrencyLimitLayer, Discipline, Gradient2},
    core::{BoxError, Extract, Priority},
    shed::LoadShedLayer,
    timeout::TimeoutLayer,
};
use tower::{Layer, Service, ServiceBuilder};

use crate::sim::{self, Backend, BackendConfig, Job, LoadConfig, Report};

/// A protection stack in front of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The backend alone: its driver queue is unbounded.
    None,
    /// tower's best hand-tuned stack: `LoadShed -> ConcurrencyLimit(pool)
    /// -> Timeout(1 s)`, the limit set to exactly the pool size.
    Tower,
    /// Ours, the server preset's layers in its order: timeout (1 s) ->
    /// priority-aware shedding -> concurrency limit = pool size, the default
    /// (CoDel) queue of 5 pools (the server preset's 100).
    Fixed,
    /// The same with the preset's untuned `Gradient2` limit and its queue
    /// (100, at most 1 s).
    Adaptive,
    /// `Adaptive` with a circuit breaker innermost, as
    /// `ServerPreset::breaker` puts it: trips when half of the last 40 calls
    /// failed, after at least 20.
    Breaker,
    /// tower's stack with its limit set to this instead of the pool size:
    /// what an operator who does not know the capacity ships.
    TowerMistuned(usize),
    /// `Adaptive` with another queue discipline (same queue size, 100):
    /// the side-by-side comparison of queues.
    Queue(Queue),
}

/// The queue disciplines the lab compares, each in front of the adaptive
/// limit with a queue of 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Oldest first, each request may wait up to 1 s: the default until
    /// CoDel replaced it.
    Fifo,
    /// Newest first, up to 1 s.
    Lifo,
    /// CoDel (5 ms target, 100 ms interval), served oldest first.
    Codel,
    /// CoDel with adaptive LIFO (Facebook's recipe): the default.
    CodelLifo,
    /// Oldest first, each request may wait at most 15 ms (a queue bounded
    /// by time rather than length).
    Timed,
}

impl Queue {
    /// Every discipline, in table order.
    pub const ALL: [Queue; 5] =
        [Queue::Fifo, Queue::Lifo, Queue::Codel, Queue::CodelLifo, Queue::Timed];

    /// The table label.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Fifo => "q fifo",
            Queue::Lifo => "q lifo",
            Queue::Codel => "q codel",
            Queue::CodelLifo => "q codel+lifo",
            Queue::Timed => "q fifo 15ms",
        }
    }

    /// The `--stacks` name.
    pub fn arg(self) -> &'static str {
        match self {
            Queue::Fifo => "fifo",
            Queue::Lifo => "lifo",
            Queue::Codel => "codel",
            Queue::CodelLifo => "codel-lifo",
            Queue::Timed => "timed",
        }
    }

    /// The adaptive limit (untuned Gradient2, queue of 100) with this
    /// discipline: the lab's and `--real`'s `Stack::Queue` limiter.
    pub fn limit_builder(self) -> ConcurrencyLimitBuilder {
        let (discipline, max_wait) = self.config();
        ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new().probe_seed(7))
            .max_queue(100)
            .max_wait(max_wait)
            .discipline(discipline)
    }

    /// The discipline and the longest wait it is configured with.
    pub fn config(self) -> (Discipline, Duration) {
        let second = Duration::from_secs(1);
        match self {
            Queue::Fifo => (Discipline::Fifo, second),
            Queue::Lifo => (Discipline::Lifo, second),
            Queue::Codel => (
                Discipline::Codel {
                    target: Duration::from_millis(5),
                    interval: Duration::from_millis(100),
                    adaptive_lifo: false,
                },
                second,
            ),
            Queue::CodelLifo => (Discipline::codel(), second),
            Queue::Timed => (Discipline::Fifo, Duration::from_millis(15)),
        }
    }
}

impl Stack {
    /// Every stack, in table order.
    pub const ALL: [Stack; 4] = [Stack::None, Stack::Tower, Stack::Fixed, Stack::Adaptive];

    /// The name shown in the table.
    pub fn name(self) -> &'static str {
        match self {
            Stack::None => "none",
            Stack::Tower => "tower",
            Stack::Fixed => "bp fixed",
            Stack::Adaptive => "bp adaptive",
            Stack::Breaker => "bp + breaker",
            Stack::TowerMistuned(n) if n > 20 => "tower x10",
            Stack::TowerMistuned(_) => "tower /4",
            Stack::Queue(q) => q.name(),
        }
    }

    /// Runs `load` through this stack in front of a fresh backend of shape
    /// `config`, on a simulation runtime (see [`sim::runtime`]).
    pub fn run(
        self,
        rt: &tokio::runtime::Runtime,
        config: &BackendConfig,
        load: &LoadConfig,
    ) -> Report {
        let backend = Backend::new(config.clone());
        let timeout = Duration::from_secs(1);
        match self {
            Stack::None => rt.block_on(sim::run(backend.clone(), &backend, load, None)),
            Stack::Tower | Stack::TowerMistuned(_) => {
                let limit = match self {
                    Stack::TowerMistuned(n) => n,
                    _ => config.pool,
                };
                let svc = ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(limit)
                    .timeout(timeout)
                    .service(backend.clone());
                rt.block_on(sim::run(svc, &backend, load, None))
            }
            Stack::Fixed | Stack::Adaptive | Stack::Breaker | Stack::Queue(_) => {
                let builder = ConcurrencyLimitLayer::builder();
                let builder = match self {
                    // A queue of 5 pools: the preset's 100 at the lab's pool of 20.
                    Stack::Fixed => builder.limit(config.pool).max_queue(config.pool * 5),
                    Stack::Queue(q) => q.limit_builder(),
                    _ => builder.adaptive(Gradient2::new().probe_seed(7)).max_queue(100),
                };
                let limit =
                    builder.priority(|job: &Job| job.priority()).build().expect("valid limit");
                let handle = limit.handle();
                let probe: sim::Probe = Arc::new(move || handle.limit());
                if self == Stack::Breaker {
                    let breaker = CircuitBreakerLayer::builder()
                        .window(SlidingWindow::Calls(40))
                        .minimum_calls(20)
                        .build()
                        .expect("valid breaker");
                    let svc = ours(timeout, limit, breaker.layer(backend.clone()));
                    return rt.block_on(sim::run(svc, &backend, load, Some(probe)));
                }
                let svc = ours(timeout, limit, backend.clone());
                rt.block_on(sim::run(svc, &backend, load, Some(probe)))
            }
        }
    }
}

/// The server preset's layers, in its order, on the simulated request:
/// timeout → priority-aware shedding on the limiter's pressure →
/// concurrency limit with a bounded queue. The shedder is the one
/// `ServerPreset::priority_header` adds: the lab's jobs carry priorities
/// (its floods are sheddable), as requests do once the preset reads a
/// header.
fn ours<P, B>(
    timeout: Duration,
    limit: ConcurrencyLimitLayer<P>,
    backend: B,
) -> impl Service<Job, Response = (), Error = BoxError, Future: Send> + Clone + Send + Sync + 'static
where
    P: Extract<Job, Output = Priority> + Clone + Send + Sync + 'static,
    B: Service<Job, Response = (), Error = BoxError> + Clone + Send + Sync + 'static,
    B::Future: Send + 'static,
{
    let shed = LoadShedLayer::builder(limit.handle())
        .priority(|job: &Job| job.priority())
        .seed(7)
        .build()
        .expect("valid shedder");
    ServiceBuilder::new()
        .layer(TimeoutLayer::new(timeout).expect("valid timeout"))
        .layer(shed)
        .layer(limit)
        .service(backend)
}
