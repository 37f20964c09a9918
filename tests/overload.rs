//! The overload lab's scenarios as assertions, in simulated time: the same
//! stacks and the same seeds as `cargo run --release --example overload`.

use std::time::Duration;

use backpressure_lab::{
    sim::{self, Backend, BackendConfig, LoadConfig, Report},
    stacks::Stack,
};

fn load(factor: f64, seed: u64) -> LoadConfig {
    LoadConfig {
        rate: BackendConfig::database().capacity() * factor,
        duration: Duration::from_secs(10),
        client_timeout: Duration::from_secs(1),
        seed,
        burst: 1,
    }
}

fn run(stack: Stack, factor: f64) -> Report {
    stack.run(&sim::runtime(), &BackendConfig::database(), &load(factor, 7))
}

fn capacity() -> f64 {
    BackendConfig::database().capacity()
}

#[test]
fn the_simulated_backend_delivers_its_nominal_capacity() {
    // A simulation runtime paused after start would round every 10 ms query
    // up to 11 ms and lose ~9 % of capacity; ours must deliver all of it.
    let rt = sim::runtime();
    let backend = Backend::new(BackendConfig::database());
    let measured = rt.block_on(sim::calibrate(&backend, Duration::from_secs(5)));
    let nominal = backend.config().capacity();
    assert!(
        (measured - nominal).abs() / nominal < 0.005,
        "measured {measured}/s, nominal {nominal}/s"
    );
}

#[test]
fn below_capacity_everything_is_served_fast() {
    let report = run(Stack::None, 0.5);
    assert_eq!(report.ok, report.sent);
    assert!(report.quantile(0.99) <= Duration::from_millis(15), "{:?}", report.quantile(0.99));
}

#[test]
fn an_unprotected_backend_collapses_at_five_times_capacity() {
    let report = run(Stack::None, 5.0);
    // Congestion collapse: not merely queueing, the backend's throughput of
    // *useful* work falls far below its capacity.
    assert!(report.goodput() < 0.1 * capacity(), "goodput {}/s", report.goodput());
    assert!(report.wasted > report.ok, "most work is done for clients that left");
}

#[test]
fn our_stacks_keep_goodput_at_capacity_at_5x_and_20x() {
    for factor in [5.0, 20.0] {
        let tower = run(Stack::Tower, factor);
        for stack in [Stack::Fixed, Stack::Adaptive] {
            let ours = run(stack, factor);
            let share = ours.goodput() / capacity();
            println!(
                "{factor}x {}: goodput {:.1} % (tower {:.1} %), p99 {:?}",
                stack.name(),
                share * 100.0,
                tower.goodput() / capacity() * 100.0,
                ours.quantile(0.99)
            );
            assert!(
                share >= 0.98,
                "{}: {:.1} % of capacity at {factor}x",
                stack.name(),
                share * 100.0
            );
            assert!(
                ours.goodput() >= 0.99 * tower.goodput(),
                "{} below tower at {factor}x",
                stack.name()
            );
            assert!(ours.quantile(0.99) <= Duration::from_millis(250));
            assert_eq!(ours.timed_out, 0, "nobody waits past their client");
        }
    }
}

#[test]
fn at_capacity_a_short_queue_turns_away_a_fraction_of_what_zero_queue_does() {
    let tower = run(Stack::Tower, 1.0);
    let ours = run(Stack::Fixed, 1.0);
    println!(
        "1x: tower rejects {} of {} ({:.1} %), ours {} ({:.1} %)",
        tower.rejected,
        tower.sent,
        100.0 * tower.rejected as f64 / tower.sent as f64,
        ours.rejected,
        100.0 * ours.rejected as f64 / ours.sent as f64
    );
    assert!(
        ours.rejected * 5 <= tower.rejected,
        "ours {} vs tower {}",
        ours.rejected,
        tower.rejected
    );
    assert!(ours.goodput() > tower.goodput());
}

#[test]
fn untuned_adaptive_beats_a_mistuned_tower_stack() {
    // Nobody knows the capacity exactly: tower's limit 10x too high and 4x
    // too low, against our adaptive limit with no tuning, at 5x load.
    let ours = run(Stack::Adaptive, 5.0);
    for (limit, label) in [(200, "10x too high"), (5, "4x too low")] {
        let tower = run(Stack::TowerMistuned(limit), 5.0);
        println!(
            "tower limit {limit} ({label}): goodput {:.1} %, p99 {:?}; ours untuned: {:.1} %, p99 {:?}",
            tower.goodput() / capacity() * 100.0,
            tower.quantile(0.99),
            ours.goodput() / capacity() * 100.0,
            ours.quantile(0.99)
        );
        assert!(tower.goodput() < 0.9 * capacity(), "tower mis-tuned by {label} loses goodput");
    }
    assert!(ours.goodput() >= 0.9 * capacity());
    assert!(ours.quantile(0.99) <= Duration::from_millis(250));
}

#[test]
fn bursty_traffic_near_capacity_is_served_by_a_short_queue() {
    // 0.9x on average, in groups of 10 arriving at once.
    let bursty = LoadConfig { burst: 10, ..load(0.9, 7) };
    let run = |stack: Stack| stack.run(&sim::runtime(), &BackendConfig::database(), &bursty);
    let tower = run(Stack::Tower);
    let tower_share = tower.rejected as f64 / tower.sent as f64;
    for stack in [Stack::Fixed, Stack::Adaptive] {
        let ours = run(stack);
        let share = ours.rejected as f64 / ours.sent as f64;
        println!(
            "bursty 0.9x: tower rejects {:.2} %, {} rejects {:.2} %, p99 {:?}",
            tower_share * 100.0,
            stack.name(),
            share * 100.0,
            ours.quantile(0.99)
        );
        assert!(share <= 0.01, "{}: {:.2} % rejected", stack.name(), share * 100.0);
        assert!(ours.rejected * 5 <= tower.rejected);
        assert!(ours.quantile(0.99) <= Duration::from_millis(100));
    }
}
