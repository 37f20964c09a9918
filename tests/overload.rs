//! The overload lab's scenarios as assertions, in simulated time.

use std::time::Duration;

use backpressure_lab::sim::{self, Backend, BackendConfig, LoadConfig};

fn load(factor: f64, seed: u64) -> LoadConfig {
    LoadConfig {
        rate: BackendConfig::database().capacity() * factor,
        duration: Duration::from_secs(10),
        client_timeout: Duration::from_secs(1),
        seed,
    }
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
    let rt = sim::runtime();
    let backend = Backend::new(BackendConfig::database());
    let report = rt.block_on(sim::run(backend.clone(), &backend, &load(0.5, 1)));
    assert_eq!(report.ok, report.sent);
    assert!(report.quantile(0.99) <= Duration::from_millis(15), "{:?}", report.quantile(0.99));
}

#[test]
fn an_unprotected_backend_collapses_at_five_times_capacity() {
    let rt = sim::runtime();
    let backend = Backend::new(BackendConfig::database());
    let report = rt.block_on(sim::run(backend.clone(), &backend, &load(5.0, 1)));
    let capacity = backend.config().capacity();
    // Congestion collapse: not merely queueing, the backend's throughput of
    // *useful* work falls far below its capacity.
    assert!(report.goodput() < 0.1 * capacity, "goodput {}/s", report.goodput());
    assert!(report.wasted > report.ok, "most work is done for clients that left");
}
