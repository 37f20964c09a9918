//! The adaptive algorithms against a simulated backend whose latency rises
//! past a knee, under paused time. Trajectories are printed
//! (`cargo test -p backpressure-concurrency --test adaptive -- --nocapture`).
//!
//! The backend has `knee` slots of 10 ms: up to `knee` requests at once take
//! 10 ms each; beyond, they share the slots, so latency grows in proportion
//! to the concurrency and throughput stays at `knee / 10 ms`. Open-loop load
//! at 3x that capacity keeps the limiter saturated.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backpressure_concurrency::{
    Aimd, ConcurrencyLimitHandle, ConcurrencyLimitLayer, Gradient2, LimitAlgorithm, Vegas,
};
use backpressure_core::BoxError;
use tokio::time::{Instant, sleep, sleep_until};
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Clone)]
struct KneeBackend {
    knee: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

struct Running(Arc<AtomicUsize>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl KneeBackend {
    fn new(knee: usize) -> Self {
        KneeBackend {
            knee: Arc::new(AtomicUsize::new(knee)),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn serve(self) -> Result<(), BoxError> {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = Running(Arc::clone(&self.running));
        let knee = self.knee.load(Ordering::SeqCst) as f64;
        let slowdown = (running as f64 / knee).max(1.0);
        sleep(Duration::from_micros((10_000.0 * slowdown) as u64)).await;
        Ok(())
    }
}

/// One trajectory: (seconds, limit, probing) every 250 ms for `secs`.
fn run(
    algorithm: impl LimitAlgorithm,
    knee: usize,
    halve_at: Option<u64>,
    secs: u64,
) -> Vec<(f64, usize, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let layer = ConcurrencyLimitLayer::builder()
            .adaptive(algorithm)
            .max_queue(100)
            .max_wait(Duration::from_millis(100))
            .build()
            .unwrap();
        let handle: ConcurrencyLimitHandle = layer.handle();
        let backend = KneeBackend::new(knee);
        let b = backend.clone();
        let svc = layer.layer(service_fn(move |()| b.clone().serve()));
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut next_report = start;
        let mut trajectory = Vec::new();
        // 3x the initial capacity, one arrival every `gap`.
        let gap = Duration::from_secs_f64(0.010 / (3.0 * knee as f64));
        let mut next = start;
        let mut tasks = tokio::task::JoinSet::new();
        while next < end {
            if let Some(at) = halve_at
                && next >= start + Duration::from_secs(at)
            {
                backend.knee.store(knee / 2, Ordering::SeqCst);
            }
            sleep_until(next).await;
            tasks.spawn(svc.clone().oneshot(()));
            while tasks.try_join_next().is_some() {}
            if next >= next_report {
                let s = handle.snapshot();
                trajectory.push(((next - start).as_secs_f64(), s.limit, s.probing));
                next_report += Duration::from_millis(250);
            }
            next += gap;
        }
        tasks.shutdown().await;
        trajectory
    })
}

fn print(name: &str, t: &[(f64, usize, bool)]) {
    let line: Vec<String> = t
        .iter()
        .step_by(2)
        .map(|(s, l, p)| format!("{s:.1}s:{l}{}", if *p { "p" } else { "" }))
        .collect();
    println!("{name}: {}", line.join(" "));
}

/// Every sample in `[from, to)` seconds, outside probes, within ±25 % of `target`.
fn assert_settled(name: &str, t: &[(f64, usize, bool)], from: f64, to: f64, target: f64) {
    let window: Vec<_> = t.iter().filter(|(s, _, p)| *s >= from && *s < to && !p).collect();
    assert!(window.len() >= 10, "{name}: too few samples");
    for (s, limit, _) in window {
        let ratio = *limit as f64 / target;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{name}: limit {limit} at {s:.2}s, target {target}"
        );
    }
}

fn aimd(initial: usize) -> Aimd {
    // AIMD only knows "slow" from its threshold: 15 % over the 10 ms service
    // time. Its sawtooth peaks where the RTT crosses it (at 12 ms, the peak
    // at a knee of 10 is 13: 30 % over), so the band follows the threshold.
    Aimd::new().initial_limit(initial).rtt_threshold(Duration::from_micros(11_500))
}

#[test]
fn each_algorithm_settles_at_the_knee_from_below_and_above() {
    for initial in [5, 200] {
        let t = run(Gradient2::new().initial_limit(initial), 20, None, 20);
        print(&format!("gradient2 from {initial}"), &t);
        assert_settled(&format!("gradient2 from {initial}"), &t, 10.0, 20.0, 20.0);

        let t = run(Vegas::new().initial_limit(initial), 20, None, 20);
        print(&format!("vegas from {initial}"), &t);
        assert_settled(&format!("vegas from {initial}"), &t, 10.0, 20.0, 20.0);

        let t = run(aimd(initial), 20, None, 20);
        print(&format!("aimd from {initial}"), &t);
        assert_settled(&format!("aimd from {initial}"), &t, 10.0, 20.0, 20.0);
    }
}

#[test]
fn each_algorithm_follows_a_halved_capacity_within_five_seconds() {
    let t = run(Gradient2::new(), 20, Some(10), 20);
    print("gradient2, knee 20 -> 10 at 10 s", &t);
    assert_settled("gradient2 halved", &t, 15.0, 20.0, 10.0);

    let t = run(Vegas::new(), 20, Some(10), 20);
    print("vegas, knee 20 -> 10 at 10 s", &t);
    assert_settled("vegas halved", &t, 15.0, 20.0, 10.0);

    let t = run(aimd(20), 20, Some(10), 20);
    print("aimd, knee 20 -> 10 at 10 s", &t);
    assert_settled("aimd halved", &t, 15.0, 20.0, 10.0);
}

/// Runs `n` requests that each hold a permit for 2 ms and are then dropped,
/// inside `Deadline::expired_scope` (a timeout cut them) or not (the client
/// left); returns the limit after.
async fn drop_requests(
    layer: &ConcurrencyLimitLayer<
        backpressure_core::DefaultPriority,
        backpressure_core::CurrentDeadline,
    >,
    n: usize,
    timed_out: bool,
) -> usize {
    let svc = layer.layer(service_fn(|()| std::future::pending::<Result<(), BoxError>>()));
    for _ in 0..n {
        let mut fut = Box::pin(svc.clone().oneshot(()));
        assert!(futures_poll(&mut fut).is_none());
        tokio::time::advance(Duration::from_millis(2)).await;
        if timed_out {
            backpressure_core::Deadline::expired_scope(|| drop(fut));
        } else {
            drop(fut);
        }
    }
    layer.handle().limit()
}

fn futures_poll<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(fut).poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

fn aimd_layer(cancel_is_drop: bool) -> ConcurrencyLimitLayer {
    let window = backpressure_concurrency::WindowConfig::default()
        .min_samples(10)
        .min_duration(Duration::from_millis(1));
    ConcurrencyLimitLayer::builder()
        .adaptive(Aimd::new().initial_limit(10).window(window))
        .cancel_is_drop(cancel_is_drop)
        .build()
        .unwrap()
}

/// A request dropped because its deadline passed is congestion; one dropped
/// because its client went away is not (the first version counted every
/// cancellation as a drop, so clients hanging up pinned the limit to its
/// floor).
#[tokio::test(start_paused = true)]
async fn timeouts_are_drops_and_clients_leaving_are_not() {
    assert_eq!(drop_requests(&aimd_layer(false), 10, true).await, 9, "10 timeouts: × 0.9");
    assert_eq!(drop_requests(&aimd_layer(false), 10, false).await, 10, "10 hang-ups: nothing");
    assert_eq!(drop_requests(&aimd_layer(true), 10, false).await, 9, "cancel_is_drop(true)");
}

async fn slow_200_ms(_: ()) -> Result<(), BoxError> {
    sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// A backend whose every request takes 200 ms however many run at once (a
/// handler waiting on a remote API), offered 2,000 requests/s: 400 in
/// flight are needed. With the default Gradient2 and the preset's queue
/// (100, 1 s), the limit must get there in about a second and serve ≥ 95 %
/// from then on. The first version grew 2 % a window and served ≈ 12 %.
#[test]
fn a_slow_endpoint_that_is_not_a_bottleneck_gets_the_permits_it_needs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (served, offered, limits) = rt.block_on(async {
        let layer = ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new().probe_seed(3))
            .max_queue(100)
            .max_wait(Duration::from_secs(1))
            .build()
            .unwrap();
        let handle = layer.handle();
        let ok = Arc::new(AtomicUsize::new(0));
        let svc = layer.layer(service_fn(slow_200_ms));
        let start = Instant::now();
        let gap = Duration::from_micros(500);
        let (mut next, mut offered, mut limits) = (start, 0usize, Vec::new());
        let mut tasks = tokio::task::JoinSet::new();
        while next < start + Duration::from_secs(8) {
            sleep_until(next).await;
            let counted = next >= start + Duration::from_secs(2);
            offered += usize::from(counted);
            let ok = Arc::clone(&ok);
            let fut = svc.clone().oneshot(());
            tasks.spawn(async move {
                if fut.await.is_ok() && counted {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            });
            while tasks.try_join_next().is_some() {}
            if (next - start).as_millis().is_multiple_of(500) {
                limits.push(handle.limit());
            }
            next += gap;
        }
        while tasks.join_next().await.is_some() {}
        (ok.load(Ordering::Relaxed), offered, limits)
    });
    println!("slow endpoint: served {served} of {offered}; limit every 0.5 s: {limits:?}");
    assert!(served as f64 >= 0.95 * offered as f64, "served {served} of {offered}: {limits:?}");
}

/// Counts the samples it is fed; keeps the limit at 1,000.
#[derive(Debug)]
struct Counting(Arc<AtomicUsize>);

impl LimitAlgorithm for Counting {
    fn initial_limit(&self) -> usize {
        1_000
    }

    fn max_limit(&self) -> usize {
        1_000
    }

    fn update(
        &mut self,
        _now: tokio::time::Instant,
        _sample: backpressure_concurrency::Sample,
    ) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed);
        1_000
    }
}

/// An adaptive limit whose algorithm counts its samples, around a service
/// that answers at once: the count, the handle and the service.
fn counting(
    max_sample_every: u32,
) -> (Arc<AtomicUsize>, ConcurrencyLimitHandle, impl Service<(), Response = (), Error = BoxError>) {
    let fed = Arc::new(AtomicUsize::new(0));
    let layer = ConcurrencyLimitLayer::builder()
        .adaptive(Counting(Arc::clone(&fed)))
        .max_sample_every(max_sample_every)
        .build()
        .unwrap();
    let handle = layer.handle();
    (fed, handle, layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) })))
}

/// Drives `n` requests through `svc`, `per_ms` of them per millisecond of
/// paused time.
async fn drive<S>(svc: &mut S, n: usize, per_ms: usize)
where
    S: Service<(), Response = (), Error = BoxError>,
{
    for i in 0..n {
        svc.ready().await.unwrap().call(()).await.unwrap();
        if (i + 1) % per_ms == 0 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
    }
}

/// `n` requests answered at once, `per_ms` of them per millisecond of
/// paused time; returns the samples the algorithm was fed and the
/// limiter's final `sample_every`.
async fn feed(n: usize, per_ms: usize) -> (usize, u32) {
    let (fed, handle, mut svc) = counting(64);
    drive(&mut svc, n, per_ms).await;
    (fed.load(Ordering::Relaxed), handle.snapshot().sample_every)
}

/// Under 200,000 completions a second the limiter measures one request in
/// `sample_every` (16 here: 12,500 samples a second, over the 10,000 it
/// aims for), so the clock is read and the algorithm locked for a sixteenth
/// of the requests; the algorithm still gets thousands of samples per
/// window.
#[tokio::test(start_paused = true)]
async fn at_high_rates_one_request_in_k_is_measured() {
    let (fed, every) = feed(200_000, 200).await;
    assert_eq!(every, 16);
    // The first 100 ms measure every request (20,000), then one in 16.
    assert!((30_000..=34_000).contains(&fed), "fed {fed}");
}

/// At 1,000 completions a second every request is measured.
#[tokio::test(start_paused = true)]
async fn at_low_rates_every_request_is_measured() {
    let (fed, every) = feed(3_000, 1).await;
    assert_eq!((fed, every), (3_000, 1));
}

/// After a high rate falls away, the first measured request brings the
/// sampling back to every request.
#[tokio::test(start_paused = true)]
async fn sampling_ends_when_the_rate_falls() {
    let (fed, handle, mut svc) = counting(64);
    drive(&mut svc, 200_000, 200).await;
    assert!(handle.snapshot().sample_every > 1);
    // Ten requests a second from now on: within `sample_every` requests per
    // core, one is measured, and every request after it is.
    let mut after = None;
    for i in 0..200usize {
        tokio::time::advance(Duration::from_millis(100)).await;
        svc.ready().await.unwrap().call(()).await.unwrap();
        if handle.snapshot().sample_every == 1 {
            after = Some(i);
            break;
        }
    }
    let after = after.expect("back to every request");
    // One thread: one stripe, so within `sample_every` (16) requests.
    assert!(after < 16, "after {after} requests");
    let before = fed.load(Ordering::Relaxed);
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(100)).await;
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(fed.load(Ordering::Relaxed), before + 10);
}

/// `max_sample_every` must be a power of two; it caps the sampling.
#[tokio::test(start_paused = true)]
async fn max_sample_every_caps_the_sampling_and_is_validated() {
    for bad in [0, 3, 2048] {
        let err = ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new())
            .max_sample_every(bad)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_sample_every", "{bad}");
    }
    let (_, handle, mut svc) = counting(4);
    drive(&mut svc, 100_000, 200).await;
    assert_eq!(handle.snapshot().sample_every, 4);
}

/// Keeps every sample it is fed; keeps the limit at 1,000.
#[derive(Debug)]
struct Recording(Arc<std::sync::Mutex<Vec<backpressure_concurrency::Sample>>>);

impl LimitAlgorithm for Recording {
    fn initial_limit(&self) -> usize {
        1_000
    }

    fn max_limit(&self) -> usize {
        1_000
    }

    fn update(&mut self, _now: Instant, sample: backpressure_concurrency::Sample) -> usize {
        self.0.lock().unwrap().push(sample);
        1_000
    }
}

/// A measured request's sample says when its permit was taken and how long
/// it held it, to the nanosecond, also long after the limiter was built:
/// the permit keeps its start as an offset from the limiter's epoch.
#[tokio::test(start_paused = true)]
async fn a_sample_carries_the_permits_start_and_hold_time() {
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let layer =
        ConcurrencyLimitLayer::builder().adaptive(Recording(Arc::clone(&samples))).build().unwrap();
    // The request holds its permit for exactly `hold` of paused time (a
    // timer would round up to its millisecond tick).
    let mut svc = layer.layer(service_fn(|hold: Duration| async move {
        tokio::time::advance(hold).await;
        Ok::<_, BoxError>(())
    }));
    tokio::time::advance(Duration::from_secs(3_600) + Duration::from_nanos(7)).await;
    let mut starts = Vec::new();
    for hold in [Duration::from_millis(30), Duration::from_nanos(1_234_567)] {
        starts.push(Instant::now());
        svc.ready().await.unwrap().call(hold).await.unwrap();
    }
    let samples = samples.lock().unwrap();
    assert_eq!(samples.len(), 2);
    for ((sample, start), hold) in
        samples.iter().zip(starts).zip([Duration::from_millis(30), Duration::from_nanos(1_234_567)])
    {
        assert_eq!(sample.start, start);
        assert_eq!(sample.rtt, hold);
        // Permits a core holds in reserve count as in flight: at most a
        // sixteenth of the limit.
        assert!((1..=1 + 1_000 / 16).contains(&sample.in_flight), "{sample:?}");
        assert!(!sample.dropped && !sample.saturated && !sample.deadline_cut);
    }
}
