//! The circuit breaker's state machine through its public API, under paused
//! time.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use backpressure_breaker::{
    AdaptiveThrottleLayer, Backoff, CircuitBreakerBuilder, CircuitBreakerLayer, SlidingWindow,
    State,
};
use backpressure_core::{BoxError, RejectKind, Rejected};
use proptest::prelude::*;
use tokio::time::advance;
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt, service_fn};

/// `Ok(ms)` succeeds after `ms`; `Err(())` fails at once.
fn backend() -> impl Service<Result<u64, ()>, Response = (), Error = BoxError, Future: Send> + Clone
{
    service_fn(|r: Result<u64, ()>| async move {
        match r {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            }
            Err(()) => Err::<(), BoxError>("failed".into()),
        }
    })
}

fn builder() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .window(SlidingWindow::Calls(10))
        .minimum_calls(5)
        .failure_rate(0.5)
        .open_duration(Duration::from_secs(10))
        .half_open_calls(2)
}

fn circuit_open(err: &BoxError) -> Option<Option<Duration>> {
    Rejected::find(err).filter(|r| r.kind() == RejectKind::CircuitOpen).map(|r| r.retry_after())
}

#[tokio::test(start_paused = true)]
async fn trips_on_the_failure_rate() {
    let layer = builder().build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..5 {
        svc.clone().oneshot(Ok(0)).await.unwrap();
    }
    for i in 0..5 {
        assert!(svc.clone().oneshot(Err(())).await.is_err());
        let expect = if i < 4 { State::Closed } else { State::Open };
        assert_eq!(layer.handle().state(), expect, "after {} failures of {}", i + 1, i + 6);
    }
}

#[tokio::test(start_paused = true)]
async fn no_trip_below_minimum_calls() {
    let layer = builder().minimum_calls(5).build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..4 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    assert_eq!(layer.handle().state(), State::Closed, "4 of 4 failed, but 4 < minimum_calls");
    let _ = svc.clone().oneshot(Err(())).await;
    assert_eq!(layer.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn trips_on_the_slow_call_rate() {
    let layer = builder().slow_call(Duration::from_millis(100), 0.6).build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..4 {
        svc.clone().oneshot(Ok(10)).await.unwrap();
    }
    for _ in 0..5 {
        svc.clone().oneshot(Ok(150)).await.unwrap();
    }
    assert_eq!(layer.handle().state(), State::Closed, "5 of 9 slow: 55 % < 60 %");
    svc.clone().oneshot(Ok(150)).await.unwrap();
    assert_eq!(layer.handle().state(), State::Open, "6 of 10 slow");
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_after_a_long_healthy_run() {
    let layer = CircuitBreakerLayer::builder()
        .window(SlidingWindow::Calls(100))
        .minimum_calls(20)
        .failure_rate(0.5)
        .build()
        .unwrap();
    let svc = layer.layer(backend());
    for _ in 0..10_000 {
        svc.clone().oneshot(Ok(0)).await.unwrap();
    }
    let mut failures = 0;
    while layer.handle().state() == State::Closed {
        let _ = svc.clone().oneshot(Err(())).await;
        failures += 1;
        assert!(failures <= 100, "did not trip within one window");
    }
    assert_eq!(failures, 50, "trips as soon as half the last 100 calls failed");
}

#[tokio::test(start_paused = true)]
async fn open_then_half_open_then_closed() {
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend());
    for _ in 0..5 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(4)).await;
    let err = svc.clone().oneshot(Ok(0)).await.unwrap_err();
    assert_eq!(
        circuit_open(&err),
        Some(Some(Duration::from_secs(6))),
        "retry_after = remaining open time"
    );
    assert_eq!(handle.snapshot().time_until_half_open, Some(Duration::from_secs(6)));
    advance(Duration::from_secs(6)).await;
    // The first call after the open time probes; no timer did anything.
    assert_eq!(handle.state(), State::Open);
    svc.clone().oneshot(Ok(0)).await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    svc.clone().oneshot(Ok(0)).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "both probes succeeded");
    assert_eq!(handle.snapshot().counts.calls, 0, "a closed breaker starts with a clean window");
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen() {
    let layer = builder().build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..5 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    advance(Duration::from_secs(10)).await;
    let _ = svc.clone().oneshot(Err(())).await;
    let _ = svc.clone().oneshot(Ok(0)).await;
    assert_eq!(layer.handle().state(), State::Open, "1 of 2 probes failed: 50 %");
}

#[tokio::test(start_paused = true)]
async fn exactly_n_probes_across_clones_and_dropped_probes_give_their_slot_back() {
    let layer = builder().build().unwrap();
    let a = layer.layer(backend());
    let mut b = layer.clone().layer(backend());
    for _ in 0..5 {
        let _ = a.clone().oneshot(Err(())).await;
    }
    advance(Duration::from_secs(10)).await;
    let mut p1 = task::spawn(a.clone().oneshot(Ok(1_000)));
    let mut p2 = task::spawn(b.call(Ok(1_000)));
    assert_pending!(p1.poll());
    assert_pending!(p2.poll());
    let err = a.clone().oneshot(Ok(0)).await.unwrap_err();
    assert_eq!(circuit_open(&err), Some(None), "a third probe is refused");
    drop(p2);
    let mut p3 = task::spawn(a.clone().oneshot(Ok(1_000)));
    assert_pending!(p3.poll());
    assert!(a.clone().oneshot(Ok(0)).await.is_err(), "two slots taken again");
    drop(p1);
    drop(p3);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_completes_is_bounded() {
    let layer = builder().half_open_max_wait(Duration::from_secs(3)).build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..5 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    advance(Duration::from_secs(10)).await;
    let mut stuck1 = task::spawn(svc.clone().oneshot(Ok(3_600_000)));
    let mut stuck2 = task::spawn(svc.clone().oneshot(Ok(3_600_000)));
    assert_pending!(stuck1.poll());
    assert_pending!(stuck2.poll());
    assert_eq!(layer.handle().state(), State::HalfOpen);
    advance(Duration::from_secs(3)).await;
    assert!(svc.clone().oneshot(Ok(0)).await.is_err());
    assert_eq!(
        layer.handle().state(),
        State::Open,
        "stuck probes count as failed after the max wait"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_open_disabled_and_reset() {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&changes);
    let layer = builder()
        .on_state_change(move |from, to| log.lock().unwrap().push((from, to)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend());
    handle.force_open();
    assert_eq!(circuit_open(&svc.clone().oneshot(Ok(0)).await.unwrap_err()), Some(None));
    handle.disable();
    for _ in 0..20 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    assert_eq!(handle.state(), State::Disabled, "disabled never trips");
    assert_eq!(handle.snapshot().counts.calls, 0, "and records nothing");
    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        *changes.lock().unwrap(),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_only_records_but_never_trips() {
    let layer = builder().metrics_only(true).build().unwrap();
    let svc = layer.layer(backend());
    for _ in 0..10 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    let snap = layer.handle().snapshot();
    assert_eq!((snap.state, snap.counts.failures), (State::Closed, 10));
    // It says what it would have done: trip at the fifth failure (the
    // minimum), and at each one after.
    assert_eq!((snap.shadow_tripped, snap.opened, snap.rejected), (6, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_open_time_backs_off_on_consecutive_reopens() {
    let layer = builder()
        .open_duration(Duration::from_secs(1))
        .backoff(Backoff::new(2.0, Duration::from_secs(5)))
        .half_open_calls(1)
        .build()
        .unwrap();
    let svc = layer.layer(backend());
    for _ in 0..5 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    let mut open_times = Vec::new();
    for _ in 0..4 {
        let until = layer.handle().snapshot().time_until_half_open.unwrap();
        open_times.push(until);
        advance(until).await;
        let _ = svc.clone().oneshot(Err(())).await; // the probe fails: reopen
    }
    assert_eq!(open_times, [1, 2, 4, 5].map(Duration::from_secs), "1 s, doubling, capped at 5 s");
}

#[tokio::test(start_paused = true)]
async fn a_time_window_trips_and_forgets() {
    let layer = CircuitBreakerLayer::builder()
        .window(SlidingWindow::Time { bucket: Duration::from_secs(1), buckets: 5 })
        .minimum_calls(4)
        .build()
        .unwrap();
    let svc = layer.layer(backend());
    for _ in 0..3 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    // Old failures age out of the 5 s window...
    advance(Duration::from_secs(6)).await;
    for _ in 0..3 {
        svc.clone().oneshot(Ok(0)).await.unwrap();
    }
    let _ = svc.clone().oneshot(Err(())).await;
    assert_eq!(layer.handle().state(), State::Closed, "1 of 4 recent calls failed");
    for _ in 0..3 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    assert_eq!(layer.handle().state(), State::Open, "4 of 7 recent calls failed");
}

#[test]
fn invalid_configurations_name_their_field() {
    let field = |b: CircuitBreakerBuilder| b.build().unwrap_err().field();
    assert_eq!(field(builder().failure_rate(0.0)), "failure_rate");
    assert_eq!(field(builder().half_open_calls(0)), "half_open_calls");
    assert_eq!(field(builder().minimum_calls(11)), "minimum_calls");
    assert_eq!(field(builder().window(SlidingWindow::Calls(0))), "window");
    assert_eq!(field(builder().open_duration(Duration::ZERO)), "open_duration");
    let bad = builder().backoff(Backoff::new(0.5, Duration::from_secs(60)));
    assert_eq!(field(bad), "backoff.multiplier");
}

/// The breaker's rules, written as plainly as possible.
struct Model {
    window: VecDeque<bool>,
    state: State,
    open_until: u64,
    probes: Vec<bool>,
}

const N: usize = 10;
const MIN: usize = 5;
const OPEN_MS: u64 = 1_000;
const PROBES: usize = 2;

impl Model {
    /// Returns whether the call was admitted.
    fn call(&mut self, now: u64, failed: bool) -> bool {
        if self.state == State::Open {
            if now < self.open_until {
                return false;
            }
            self.state = State::HalfOpen;
            self.probes.clear();
        }
        if self.state == State::HalfOpen {
            self.probes.push(failed);
            if self.probes.len() == PROBES {
                let failures = self.probes.iter().filter(|f| **f).count();
                if failures * 2 >= PROBES {
                    self.state = State::Open;
                    self.open_until = now + OPEN_MS;
                } else {
                    self.state = State::Closed;
                    self.window.clear();
                }
            }
            return true;
        }
        if self.window.len() == N {
            self.window.pop_front();
        }
        self.window.push_back(failed);
        let failures = self.window.iter().filter(|f| **f).count();
        if failed && self.window.len() >= MIN && failures * 2 >= self.window.len() {
            self.state = State::Open;
            self.open_until = now + OPEN_MS;
        }
        true
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matches_the_reference_model(ops in proptest::collection::vec((any::<bool>(), 0u64..400), 1..300)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let layer = CircuitBreakerLayer::builder()
                .window(SlidingWindow::Calls(N))
                .minimum_calls(MIN as u64)
                .failure_rate(0.5)
                .open_duration(Duration::from_millis(OPEN_MS))
                .half_open_calls(PROBES as u32)
                .build()
                .unwrap();
            let svc = layer.layer(backend());
            let mut model = Model { window: VecDeque::new(), state: State::Closed, open_until: 0, probes: Vec::new() };
            let start = tokio::time::Instant::now();
            for (failed, gap) in ops {
                advance(Duration::from_millis(gap)).await;
                let now = start.elapsed().as_millis() as u64;
                let expected = model.call(now, failed);
                let result = svc.clone().oneshot(if failed { Err(()) } else { Ok(0) }).await;
                let admitted = !matches!(&result, Err(e) if Rejected::find(e).is_some());
                prop_assert_eq!(admitted, expected, "at {} ms", now);
                prop_assert_eq!(layer.handle().state(), model.state, "at {} ms", now);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_throttle_rejects_with_the_formula_probability() {
    // A backend that accepts a fixed fraction of requests (deterministic
    // pattern). The window is long, so it only grows during the run.
    for accept_one_in in [1u64, 2, 3, 5, 10] {
        let throttle = AdaptiveThrottleLayer::builder().seed(11).build().unwrap();
        let handle = throttle.handle();
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = Arc::clone(&counter);
        let svc = throttle.layer(service_fn(move |()| {
            let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if n.is_multiple_of(accept_one_in) {
                    Ok(())
                } else {
                    Err::<(), BoxError>("503".into())
                }
            }
        }));
        let (mut expected, mut rejected, n) = (0.0f64, 0u32, 4_000u32);
        for _ in 0..n {
            let (requests, accepts) = handle.counts();
            let formula =
                ((requests as f64 - 2.0 * accepts as f64) / (requests as f64 + 1.0)).max(0.0);
            assert!((handle.probability() - formula).abs() < 1e-12);
            expected += formula;
            match svc.clone().oneshot(()).await {
                Err(e) if Rejected::find(&e).is_some() => rejected += 1,
                _ => {}
            }
        }
        // The sum of Bernoulli draws with these probabilities: its standard
        // deviation is at most sqrt(n)/2 ≈ 32; allow 4 sigma.
        let tolerance = 4.0 * (f64::from(n)).sqrt() / 2.0;
        println!(
            "accepting 1 in {accept_one_in}: rejected {rejected} locally, formula expects {expected:.0} (±{tolerance:.0})"
        );
        assert!((f64::from(rejected) - expected).abs() <= tolerance);
        if accept_one_in <= 2 {
            assert_eq!(rejected, 0, "at or above 1/K accepted, nothing is shed");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_throttle_waits_for_min_requests_before_shedding() {
    let throttle = AdaptiveThrottleLayer::builder().min_requests(20).seed(3).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(|()| async { Err::<(), BoxError>("503".into()) }));
    // Every request fails, but the first 20 all reach the backend.
    for i in 0..20 {
        assert_eq!(handle.probability(), 0.0, "request {i}");
        let err = svc.clone().oneshot(()).await.unwrap_err();
        assert!(Rejected::find(&err).is_none(), "request {i} was shed");
    }
    // From then on the SRE formula applies: 20/21 for the 21st.
    assert!((handle.probability() - 20.0 / 21.0).abs() < 1e-12);
}

/// A dependency that never answers, behind something that cuts calls at
/// their deadline the way the timeout layer does: the breaker must trip.
/// On the first version a dropped closed-state call recorded nothing, so a
/// hung dependency never tripped a breaker below a timeout.
#[tokio::test(start_paused = true)]
async fn calls_cut_by_their_deadline_are_failures() {
    let layer = builder().build().unwrap();
    let mut svc = layer.layer(service_fn(|()| std::future::pending::<Result<(), BoxError>>()));
    for i in 0..5 {
        svc.ready().await.unwrap();
        let fut = svc.call(());
        backpressure_core::Deadline::expired_scope(|| drop(fut));
        let expect = if i < 4 { State::Closed } else { State::Open };
        assert_eq!(layer.handle().state(), expect, "after {} timeouts", i + 1);
    }
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(circuit_open(&err).is_some(), "later calls fail fast: {err}");
}

/// A client that goes away says nothing about the dependency: ignored by
/// default, a failure when asked.
#[tokio::test(start_paused = true)]
async fn calls_dropped_by_a_client_that_left_are_ignored_by_default() {
    for (cancel_is_failure, expect) in [(false, State::Closed), (true, State::Open)] {
        let layer = builder().cancel_is_failure(cancel_is_failure).build().unwrap();
        let mut svc = layer.layer(service_fn(|()| std::future::pending::<Result<(), BoxError>>()));
        for _ in 0..10 {
            svc.ready().await.unwrap();
            drop(svc.call(()));
        }
        assert_eq!(layer.handle().state(), expect, "cancel_is_failure({cancel_is_failure})");
        let counts = layer.handle().snapshot().counts;
        assert_eq!(counts.calls, if cancel_is_failure { 5 } else { 0 });
    }
}

/// With a slow-call threshold, a call dropped after it (by a timeout of
/// somebody else's, without our deadline scope) is a failure and slow.
#[tokio::test(start_paused = true)]
async fn calls_dropped_past_the_slow_threshold_are_slow_failures() {
    let layer = builder().slow_call(Duration::from_millis(100), 0.5).build().unwrap();
    let mut svc = layer.layer(service_fn(|()| std::future::pending::<Result<(), BoxError>>()));
    for _ in 0..5 {
        svc.ready().await.unwrap();
        let fut = svc.call(());
        let _ = tokio::time::timeout(Duration::from_millis(150), fut).await;
    }
    assert_eq!(layer.handle().state(), State::Open);
}

/// Half-open probes dropped by a timeout fail the round, not just return
/// their slot.
#[tokio::test(start_paused = true)]
async fn a_probe_cut_by_its_deadline_reopens() {
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| std::future::pending::<Result<(), BoxError>>()));
    for _ in 0..5 {
        svc.ready().await.unwrap();
        let fut = svc.call(());
        backpressure_core::Deadline::expired_scope(|| drop(fut));
    }
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    let probes: Vec<_> = (0..2).map(|_| svc.call(())).collect();
    assert_eq!(handle.state(), State::HalfOpen);
    backpressure_core::Deadline::expired_scope(|| drop(probes));
    assert_eq!(handle.state(), State::Open, "both probes timed out");
    assert_eq!(handle.snapshot().consecutive_opens, 2);
}

/// The jitter is applied before the cap: the open time never exceeds the
/// documented maximum (the first version applied it after, up to
/// `max × (1 + jitter)`).
#[tokio::test(start_paused = true)]
async fn jittered_open_times_never_exceed_the_backoff_max() {
    let max = Duration::from_secs(40);
    for seed in 0..50 {
        let layer = builder()
            .open_duration(Duration::from_secs(10))
            .backoff(Backoff::new(2.0, max).jitter(0.5))
            .half_open_calls(1)
            .seed(seed)
            .build()
            .unwrap();
        let svc = layer.layer(backend());
        for _ in 0..5 {
            let _ = svc.clone().oneshot(Err(())).await;
        }
        // 10, 20, 40, 40, ... seconds, each ±50 %: capped at 40.
        for _ in 0..6 {
            let open = layer.handle().snapshot().time_until_half_open.expect("open");
            assert!(open <= max, "seed {seed}: open for {open:?} > {max:?}");
            advance(open).await;
            let _ = svc.clone().oneshot(Err(())).await; // the probe fails: reopen
        }
    }
}

/// Durations at the limit of what `Duration` holds build, and the breaker
/// then works: no panic when it opens, backs off, or goes half-open.
#[tokio::test(start_paused = true)]
async fn huge_durations_never_panic() {
    let layer = builder()
        .open_duration(Duration::MAX)
        .backoff(Backoff::new(10.0, Duration::MAX).jitter(0.9))
        .half_open_max_wait(Duration::MAX)
        .slow_call(Duration::MAX, 1.0)
        .window(SlidingWindow::Time { bucket: Duration::MAX, buckets: 3_600 })
        .build()
        .unwrap();
    let svc = layer.layer(backend());
    for _ in 0..20 {
        let _ = svc.clone().oneshot(Err(())).await;
    }
    assert_eq!(layer.handle().state(), State::Open);
    advance(Duration::from_secs(86_400 * 365)).await;
    let err = svc.clone().oneshot(Ok(0)).await.unwrap_err();
    assert!(circuit_open(&err).is_some());
}
