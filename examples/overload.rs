//! The overload lab: a database that handles 2,000 queries/s meets an API
//! taking up to 10,000 requests/s.
//!
//! ```text
//! cargo run --release --example overload [-- --duration 10 --seed 7]
//! ```
//!
//! Everything runs in simulated time (a paused tokio clock), so the figures
//! are deterministic for a seed. Stacks, each in front of the same backend:
//!
//! - `none`: the backend alone (its driver queue is unbounded);
//! - `tower`: tower's best hand-tuned stack, `LoadShed -> ConcurrencyLimit(20)
//!   -> Timeout(1 s)`, with the limit set to exactly the pool size;
//! - `bp fixed`: our timeout (1 s) -> concurrency limit 20 with a FIFO queue
//!   of 100 (the server preset's);
//! - `bp adaptive`: the same with an untuned `Gradient2` limit, which must
//!   find the capacity itself.
//!
//! Then the mis-tuned case (tower's limit 10x too high and 4x too low,
//! against our adaptive limit with no tuning) and bursty traffic at 0.9x.
//!
//! Still to come (see the lab's issue): priorities, the step /
//! capacity-change / stale-work / retry scenarios, the SVG and the `--real`
//! engine.

use std::time::Duration;

use backpressure_lab::{
    sim::{self, Backend, BackendConfig, LoadConfig, Report},
    stacks::Stack,
};

struct Args {
    duration: Duration,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { duration: Duration::from_secs(10), seed: 7 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--duration" => {
                let secs: u64 = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration takes whole seconds".to_string())?;
                if secs == 0 {
                    return Err("--duration must be at least 1 second".into());
                }
                args.duration = Duration::from_secs(secs);
            }
            "--seed" => {
                args.seed =
                    value("--seed")?.parse().map_err(|_| "--seed takes an integer".to_string())?
            }
            "-h" | "--help" => {
                println!("usage: overload [--duration SECONDS] [--seed N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn row(stack: &str, load: f64, capacity: f64, r: &Report) {
    println!(
        "{stack:<12} {load:>5.1}x {:>9.0} {:>6.1}% {:>8.0?} {:>8.0?} {:>8.0?} {:>9} {:>9} {:>9}",
        r.goodput(),
        100.0 * r.goodput() / capacity,
        r.quantile(0.50),
        r.quantile(0.99),
        r.quantile(1.0),
        r.rejected,
        r.timed_out,
        r.peak_outstanding,
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overload: {e}");
            std::process::exit(2);
        }
    };
    let rt = sim::runtime();
    let config = BackendConfig::database();
    let capacity =
        rt.block_on(sim::calibrate(&Backend::new(config.clone()), Duration::from_secs(5)));
    println!(
        "backend: pool of {} at {:?} per query, nominal {:.0} queries/s, measured {capacity:.0}/s (closed loop, 5 s)",
        config.pool,
        config.service_time,
        config.capacity(),
    );
    println!(
        "load: Poisson arrivals for {:?} per run, clients give up after 1 s, seed {}\n",
        args.duration, args.seed
    );
    println!(
        "{:<12} {:>6} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "stack",
        "load",
        "goodput/s",
        "of cap",
        "p50",
        "p99",
        "max",
        "rejected",
        "too late",
        "peak out"
    );
    for factor in [0.5, 1.0, 2.0, 5.0, 20.0] {
        let load = LoadConfig {
            rate: capacity * factor,
            duration: args.duration,
            client_timeout: Duration::from_secs(1),
            seed: args.seed,
            burst: 1,
        };
        for stack in Stack::ALL {
            row(stack.name(), factor, capacity, &stack.run(&rt, &config, &load));
        }
    }
    // Where hand-tuning fails: nobody knows the capacity exactly.
    println!(
        "\nmis-tuned: tower's limit 10x too high (200) and 4x too low (5), ours untuned, at 5x load"
    );
    let load = LoadConfig {
        rate: capacity * 5.0,
        duration: args.duration,
        client_timeout: Duration::from_secs(1),
        seed: args.seed,
        burst: 1,
    };
    for stack in [
        Stack::TowerMistuned(config.pool * 10),
        Stack::TowerMistuned(config.pool / 4),
        Stack::Adaptive,
    ] {
        row(stack.name(), 5.0, capacity, &stack.run(&rt, &config, &load));
    }
    // Bursty traffic near capacity: the mean is 0.9x, but requests come in
    // groups of 10. A zero-queue shedder rejects what a short queue serves.
    println!("\nbursty: 0.9x load in bursts of 10");
    let load = LoadConfig {
        rate: capacity * 0.9,
        duration: args.duration,
        client_timeout: Duration::from_secs(1),
        seed: args.seed,
        burst: 10,
    };
    for stack in [Stack::Tower, Stack::Fixed, Stack::Adaptive] {
        let r = stack.run(&rt, &config, &load);
        row(stack.name(), 0.9, capacity, &r);
        println!(
            "{:>21} rejected {:.2} % of {} requests",
            "",
            100.0 * r.rejected as f64 / r.sent as f64,
            r.sent
        );
    }
    println!(
        "\n\"rejected\": turned away fast with an error. \"too late\": answered only after\n\
         the client had given up (1 s). Without protection every request past\n\
         capacity queues in the driver, the database slows under contention and\n\
         goodput collapses. A concurrency limit at the pool size keeps the\n\
         database at its best throughput; the adaptive one finds that size alone,\n\
         and a bounded queue absorbs bursts a zero-queue limiter turns away."
    );
}
