//! The lab's scenarios, shared by `examples/overload.rs` (which prints and
//! draws them) and `tests/overload.rs` (which asserts their goals).

use std::time::Duration;

use crate::{
    sim::{self, Backend, BackendConfig, Clients, LoadConfig, Report, SlowPeriod},
    stacks::{Queue, Stack},
};

/// The lab's bench: a simulation runtime, the backend's shape and its
/// measured capacity, and the run settings.
#[derive(Debug)]
pub struct Lab {
    /// The simulation runtime (paused clock).
    pub rt: tokio::runtime::Runtime,
    /// The backend's shape.
    pub config: BackendConfig,
    /// Its capacity measured in a closed loop, queries per second.
    pub capacity: f64,
    /// Simulated seconds of arrivals per run (the plain scenarios).
    pub duration: Duration,
    /// Seed of every arrival process.
    pub seed: u64,
}

impl Lab {
    /// The project's scenario backend (20 connections at 10 ms), calibrated.
    pub fn new(duration: Duration, seed: u64) -> Self {
        let rt = sim::runtime();
        let config = BackendConfig::database();
        let capacity =
            rt.block_on(sim::calibrate(&Backend::new(config.clone()), Duration::from_secs(5)));
        Lab { rt, config, capacity, duration, seed }
    }

    /// Poisson load at `factor` × capacity for the lab's duration.
    pub fn load(&self, factor: f64) -> LoadConfig {
        LoadConfig::poisson(self.capacity * factor, self.duration, self.seed)
    }

    /// Runs `stack` under `load` on the lab's backend shape.
    pub fn run(&self, stack: Stack, load: &LoadConfig) -> Report {
        stack.run(&self.rt, &self.config, load)
    }

    /// Runs `stack` under `load` against a backend of another shape.
    pub fn run_on(&self, stack: Stack, config: &BackendConfig, load: &LoadConfig) -> Report {
        stack.run(&self.rt, config, load)
    }
}

/// A scenario's result: one row per (label, stack).
#[derive(Debug)]
pub struct Row {
    /// What varies between rows (the offered load, the client behaviour).
    pub label: String,
    /// The stack.
    pub stack: Stack,
    /// What happened.
    pub report: Report,
}

/// The plain scenario: Poisson load at each factor of capacity, every stack.
pub fn plain(
    lab: &Lab,
    factors: &[f64],
    stacks: &[Stack],
    mut progress: impl FnMut(&str),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &f in factors {
        for &stack in stacks {
            progress(&format!("plain {f}x {}", stack.name()));
            rows.push(Row { label: format!("{f}x"), stack, report: lab.run(stack, &lab.load(f)) });
        }
    }
    rows
}

/// Mis-tuned: tower's limit 10× too high and 4× too low, ours untuned, at 5×.
pub fn mistuned(lab: &Lab) -> Vec<Row> {
    let pool = lab.config.pool;
    [Stack::TowerMistuned(pool * 10), Stack::TowerMistuned(pool / 4), Stack::Adaptive]
        .into_iter()
        .map(|stack| Row { label: "5x".into(), stack, report: lab.run(stack, &lab.load(5.0)) })
        .collect()
}

/// Bursty: 0.9× on average, in groups of 10 arriving at once.
pub fn bursty(lab: &Lab) -> Vec<Row> {
    let load = LoadConfig { burst: 10, ..lab.load(0.9) };
    [Stack::Tower, Stack::Fixed, Stack::Adaptive]
        .into_iter()
        .map(|stack| Row {
            label: "0.9x bursts of 10".into(),
            stack,
            report: lab.run(stack, &load),
        })
        .collect()
}

/// The loads of [`queues`]' sustained overload rows.
pub const QUEUE_LOADS: [f64; 4] = [1.0, 2.0, 5.0, 20.0];

/// Queues side by side: the adaptive limit with each [`Queue`] discipline
/// at 1×, 2×, 5× and 20× (a queue must not stand under sustained overload),
/// then at bursty 0.9× (it must still absorb bursts).
pub fn queues(lab: &Lab, mut progress: impl FnMut(&str)) -> Vec<Row> {
    let mut rows = Vec::new();
    let bursty = LoadConfig { burst: 10, ..lab.load(0.9) };
    let loads = QUEUE_LOADS.iter().map(|&f| (format!("{f}x"), lab.load(f)));
    for (label, load) in loads.chain([("0.9x bursts of 10".to_string(), bursty)]) {
        for q in Queue::ALL {
            progress(&format!("queues {label} {}", q.name()));
            let stack = Stack::Queue(q);
            rows.push(Row { label: label.clone(), stack, report: lab.run(stack, &load) });
        }
    }
    rows
}

/// When the capacity change starts and ends, and how long the run lasts.
pub const SLOW_FROM: Duration = Duration::from_secs(5);
/// See [`SLOW_FROM`].
pub const SLOW_TO: Duration = Duration::from_secs(15);
/// See [`SLOW_FROM`].
pub const SLOW_RUN: Duration = Duration::from_secs(22);

/// Capacity change: at 1× of the normal capacity, the backend becomes 3×
/// slower from 5 s to 15 s (a failover, a GC storm), then recovers.
pub fn capacity_change(lab: &Lab, stacks: &[Stack]) -> Vec<Row> {
    let config = BackendConfig {
        slow: vec![SlowPeriod { from: SLOW_FROM, to: SLOW_TO, factor: 3.0 }],
        ..lab.config.clone()
    };
    let load = LoadConfig { duration: SLOW_RUN, ..lab.load(1.0) };
    stacks
        .iter()
        .map(|&stack| Row {
            label: "1x, 3x slower 5-15 s".into(),
            stack,
            report: lab.run_on(stack, &config, &load),
        })
        .collect()
}

/// Priority flood: critical traffic worth 20 % of the capacity, plus a
/// sheddable flood, 5× the capacity in all (4 % of the requests are
/// critical). Critical traffic alone at 20 % of capacity must be served
/// whatever the flood does; tower's shedder cannot tell them apart.
pub fn priority_flood(lab: &Lab) -> Vec<Row> {
    let load = LoadConfig { critical_share: 0.2 / 5.0, ..lab.load(5.0) };
    [Stack::Tower, Stack::Fixed, Stack::Adaptive]
        .into_iter()
        .map(|stack| Row {
            label: "5x, critical = 0.2x".into(),
            stack,
            report: lab.run(stack, &load),
        })
        .collect()
}

/// Retry storm: 2× load, clients abandoning an attempt after 1 s and
/// retrying on timeouts and rejections, up to 3 attempts: naively, and
/// through this project's retry layer with its budget (10 %).
pub fn retry_storm(lab: &Lab) -> Vec<Row> {
    let naive = LoadConfig { clients: Clients::NaiveRetry { attempts: 3 }, ..lab.load(2.0) };
    let budget =
        LoadConfig { clients: Clients::BudgetRetry { attempts: 3, ratio: 0.1 }, ..lab.load(2.0) };
    let mut rows = Vec::new();
    for stack in [Stack::None, Stack::Tower, Stack::Adaptive] {
        rows.push(Row { label: "2x, naive retries".into(), stack, report: lab.run(stack, &naive) });
    }
    rows.push(Row {
        label: "2x, retry budget".into(),
        stack: Stack::Adaptive,
        report: lab.run(Stack::Adaptive, &budget),
    });
    rows
}

/// The step scenario's shape: 1× until [`STEP_UP`], 10× until
/// [`STEP_DOWN`], 1× until [`STEP_RUN`].
pub const STEP_UP: Duration = Duration::from_secs(5);
/// See [`STEP_UP`].
pub const STEP_DOWN: Duration = Duration::from_secs(15);
/// See [`STEP_UP`].
pub const STEP_RUN: Duration = Duration::from_secs(20);

/// Step: 1× for 5 s, 10× for 10 s, back to 1× for 5 s.
pub fn step(lab: &Lab, stacks: &[Stack]) -> Vec<Row> {
    let load = LoadConfig {
        duration: STEP_RUN,
        steps: vec![(STEP_UP, 10.0), (STEP_DOWN, 1.0)],
        ..lab.load(1.0)
    };
    stacks
        .iter()
        .map(|&stack| Row { label: "1x -> 10x -> 1x".into(), stack, report: lab.run(stack, &load) })
        .collect()
}

/// Slow but parallel: every request takes 200 ms however many run at once
/// (a handler waiting on a remote API; room for 2,000 at once), 2,000
/// requests/s offered for the lab's duration. Nothing is a bottleneck: 400
/// in flight serve it all. tower's stack is tuned to the 2,000 slots.
pub fn slow_parallel(lab: &Lab) -> Vec<Row> {
    let config = BackendConfig::slow_parallel();
    let load = LoadConfig::poisson(SLOW_PARALLEL_RATE, lab.duration, lab.seed);
    [Stack::Tower, Stack::Adaptive]
        .into_iter()
        .map(|stack| Row {
            label: "200 ms, 2,000/s".into(),
            stack,
            report: lab.run_on(stack, &config, &load),
        })
        .collect()
}

/// The offered load of [`slow_parallel`], requests per second.
pub const SLOW_PARALLEL_RATE: f64 = 2_000.0;

/// Background errors: the lab's backend at 0.8× capacity with 1 % and with
/// 5 % of queries failing (a handler bug answering 500), tower's stack and
/// ours. Errors are the breaker's business: the adaptive limit must not
/// shrink on them.
pub fn background_errors(lab: &Lab) -> Vec<Row> {
    let mut rows = Vec::new();
    for rate in ERROR_RATES {
        let config = BackendConfig { error_rate: rate, ..lab.config.clone() };
        for stack in [Stack::Tower, Stack::Adaptive] {
            rows.push(Row {
                label: format!("0.8x, {:.0} % errors", rate * 100.0),
                stack,
                report: lab.run_on(stack, &config, &lab.load(0.8)),
            });
        }
    }
    rows
}

/// The error rates of [`background_errors`].
pub const ERROR_RATES: [f64; 2] = [0.01, 0.05];

/// When the dependency of [`hung_dependency`] stops answering.
pub const HANG_FROM: Duration = Duration::from_secs(3);

/// Hung dependency: at 0.5× capacity the backend stops answering at 3 s
/// (it hangs; nothing refuses). Behind timeout (1 s) → breaker, the
/// timeouts must trip the breaker, and later requests fail at once instead
/// of each waiting out its timeout. tower's stack has no breaker to trip.
pub fn hung_dependency(lab: &Lab) -> Vec<Row> {
    let config = BackendConfig { hang_from: Some(HANG_FROM), ..lab.config.clone() };
    [Stack::Tower, Stack::Breaker]
        .into_iter()
        .map(|stack| Row {
            label: "0.5x, hangs at 3 s".into(),
            stack,
            report: lab.run_on(stack, &config, &lab.load(0.5)),
        })
        .collect()
}

/// The share of clients that hang up in [`cancellations`], and the window
/// within which they do.
pub const HANGUPS: (f64, Duration) = (0.1, Duration::from_millis(50));

/// Client cancellations: at 2×, 10 % of clients hang up at a random moment
/// in their first 50 ms (queued, or in the backend), which cancels the
/// server's work; next to the same run without hang-ups. A client leaving
/// says nothing about capacity: goodput and the limit must not move.
pub fn cancellations(lab: &Lab) -> Vec<Row> {
    let mut rows = Vec::new();
    for (label, hangups) in [("2x", None), ("2x, 10 % hang up", Some(HANGUPS))] {
        for stack in [Stack::Tower, Stack::Adaptive] {
            let load = LoadConfig { hangups, ..lab.load(2.0) };
            rows.push(Row { label: label.into(), stack, report: lab.run(stack, &load) });
        }
    }
    rows
}
