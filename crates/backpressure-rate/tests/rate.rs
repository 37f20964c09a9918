//! Behaviour of `RateLimitLayer` through its public API, under paused time.

use std::time::Duration;

use backpressure_core::{BoxError, Deadline, RejectKind, Rejected};
use backpressure_rate::{KeyedStore, Quota, RateLimitLayer, RateStore, Verdict};
use proptest::prelude::*;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })
}

fn rejected(err: &BoxError) -> &Rejected {
    Rejected::find(err).expect("a Rejected")
}

#[tokio::test(start_paused = true)]
async fn a_burst_then_exactly_the_steady_rate() {
    // 100 per second (10 ms each), bursts of 5.
    let svc = RateLimitLayer::new(Quota::per_second(100).burst(5)).unwrap().layer(echo());
    for i in 0..5 {
        svc.clone().oneshot(i).await.expect("within the burst");
    }
    let err = svc.clone().oneshot(5).await.unwrap_err();
    assert_eq!(rejected(&err).kind(), RejectKind::RateLimited);
    // Then one every 10 ms, no more.
    let mut admitted = 0;
    for _ in 0..1_000 {
        advance(Duration::from_millis(1)).await;
        if svc.clone().oneshot(0).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 100, "1 s at 100/s");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_exact() {
    let svc = RateLimitLayer::new(Quota::per_second(4).burst(1)).unwrap().layer(echo());
    svc.clone().oneshot(0).await.unwrap();
    let err = svc.clone().oneshot(1).await.unwrap_err();
    let after = rejected(&err).retry_after().expect("known");
    assert_eq!(after, Duration::from_millis(250));
    let info = rejected(&err).rate_limit().expect("header info");
    assert_eq!((info.limit, info.remaining, info.window), (1, 0, Duration::from_secs(1)));
    advance(after - Duration::from_nanos(1)).await;
    assert!(svc.clone().oneshot(2).await.is_err(), "a nanosecond early");
    advance(Duration::from_nanos(1)).await;
    assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3, "exactly on time");
}

#[tokio::test(start_paused = true)]
async fn weighted_requests_and_impossible_costs() {
    let svc = RateLimitLayer::builder(Quota::per_second(10).burst(10))
        .cost(|n: &u32| *n)
        .build()
        .unwrap()
        .layer(echo());
    svc.clone().oneshot(7).await.unwrap();
    let err = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(rejected(&err).retry_after(), Some(Duration::from_millis(100)), "one unit short");
    svc.clone().oneshot(3).await.unwrap();
    let err = svc.clone().oneshot(11).await.unwrap_err();
    assert_eq!(rejected(&err).retry_after(), None, "a cost above the burst never conforms");
}

#[tokio::test(start_paused = true)]
async fn one_bucket_across_clones_and_layer_applications() {
    let layer = RateLimitLayer::new(Quota::per_second(1).burst(3)).unwrap();
    let a = layer.layer(echo());
    let b = layer.clone().layer(echo());
    a.clone().oneshot(0).await.unwrap();
    b.clone().oneshot(0).await.unwrap();
    a.clone().oneshot(0).await.unwrap();
    assert!(b.clone().oneshot(0).await.is_err(), "three admitted in total, not per service");
    assert_eq!(layer.handle().snapshot::<()>().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn keys_have_their_own_buckets() {
    let svc = RateLimitLayer::builder(Quota::per_second(1).burst(1))
        .keyed(|n: &u32| *n % 2)
        .build()
        .unwrap()
        .layer(echo());
    svc.clone().oneshot(0).await.unwrap();
    svc.clone().oneshot(1).await.unwrap();
    assert!(svc.clone().oneshot(2).await.is_err(), "key 0 spent");
    assert!(svc.clone().oneshot(3).await.is_err(), "key 1 spent");
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_but_admits() {
    let layer =
        RateLimitLayer::builder(Quota::per_second(1).burst(1)).shadow(true).build().unwrap();
    let svc = layer.layer(echo());
    for i in 0..5 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap(), i);
    }
    let snap = layer.handle().snapshot::<()>();
    assert_eq!((snap.rejected, snap.shadow_rejected), (0, 4));
}

#[tokio::test(start_paused = true)]
async fn a_bounded_wait_instead_of_a_rejection() {
    let layer = RateLimitLayer::builder(Quota::per_second(10).burst(1))
        .max_wait(Duration::from_millis(150))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    svc.clone().oneshot(0).await.unwrap();
    // Conforms in 100 ms: waits for its reserved slot.
    let mut second = task::spawn(svc.call(1));
    assert_pending!(second.poll());
    advance(Duration::from_millis(99)).await;
    assert_pending!(second.poll());
    advance(Duration::from_millis(1)).await;
    assert_eq!(assert_ready!(second.poll()).unwrap(), 1);
    // Two more at once: the first waits 100 ms, the second would wait 200 ms
    // > 150 ms and is rejected at once.
    let mut third = task::spawn(svc.call(2));
    assert_pending!(third.poll());
    let err = assert_ready!(task::spawn(svc.call(3)).poll()).unwrap_err();
    assert_eq!(rejected(&err).kind(), RejectKind::RateLimited);
    assert_eq!(layer.handle().snapshot::<()>().delayed, 2);
}

#[tokio::test(start_paused = true)]
async fn a_bounded_wait_never_passes_the_deadline() {
    let layer = RateLimitLayer::builder(Quota::per_second(10).burst(1))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    svc.clone().oneshot(0).await.unwrap();
    // 100 ms to the next slot, but only 50 ms left before the deadline.
    let deadline = Deadline::after(Duration::from_millis(50));
    let err = deadline.scope(|| svc.call(1)).await.unwrap_err();
    assert_eq!(rejected(&err).kind(), RejectKind::RateLimited);
}

#[test]
fn invalid_quotas_name_their_field() {
    let field = |q: Quota| RateLimitLayer::new(q).unwrap_err().field();
    assert_eq!(field(Quota::per_second(0)), "quota.count");
    assert_eq!(field(Quota::per(1, Duration::ZERO)), "quota.period");
    assert_eq!(field(Quota::per_second(1).burst(0)), "quota.burst");
    assert_eq!(field(Quota::per(u32::MAX, Duration::from_nanos(1))), "quota.count");
    let keyed =
        RateLimitLayer::builder(Quota::per_second(1)).keyed(|n: &u32| *n).max_keys(0).build();
    assert_eq!(keyed.unwrap_err().field(), "max_keys");
}

#[tokio::test(start_paused = true)]
async fn a_key_spray_cannot_grow_memory_or_displace_real_clients() {
    // 10 per second per key, 10,000 keys at most. Twenty real clients use
    // their full quota while a spray of 1,000,000 distinct keys arrives at
    // 100,000 per second.
    let store = KeyedStore::new(Quota::per_second(10), 10_000).unwrap();
    let check = |key: u64| RateStore::<u64>::check(&store, &key, 1, Duration::ZERO);
    let admitted = |c| match c {
        backpressure_rate::Check::Ready(Ok(d)) => !matches!(d.verdict, Verdict::Reject { .. }),
        _ => panic!("in-memory stores answer at once"),
    };
    let mut real_ok = [0u32; 20];
    let mut real_sent = 0u32;
    let (mut spray_key, mut peak) = (1_000_000u64, 0usize);
    for ms in 0..10_000u64 {
        for _ in 0..100 {
            admitted(check(spray_key));
            spray_key += 1;
        }
        if ms % 100 == 0 {
            real_sent += 1;
            for (client, ok) in real_ok.iter_mut().enumerate() {
                if admitted(check(client as u64)) {
                    *ok += 1;
                }
            }
            peak = peak.max(store.len());
        }
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(spray_key - 1_000_000, 1_000_000);
    assert!(peak <= 10_000, "store grew to {peak}");
    assert!(store.len() <= 10_000);
    for (client, ok) in real_ok.iter().enumerate() {
        assert_eq!(*ok, real_sent, "client {client} lost part of its quota");
    }
    let bytes_per_key = store.memory_bytes() as f64 / store.max_keys() as f64;
    println!(
        "key spray: 1,000,000 keys, peak {peak} buckets, {} overflow decisions, {:.1} heap bytes per bucket slot",
        store.overflow_hits(),
        bytes_per_key
    );
    assert!(store.overflow_hits() > 0, "the spray must have pushed past the cap");
    // A bucket is 16 bytes plus a control byte; a table held at its cap
    // through churn grows one size step (tombstones), so up to ~4x that per
    // slot of `max_keys`, and never more.
    assert!(bytes_per_key <= 4.0 * 17.0, "{bytes_per_key} bytes per slot");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through the whole layer, over any arrivals and time advances: admitted
    /// cost never exceeds burst + rate × elapsed, per key.
    #[test]
    fn the_layer_never_admits_more_than_the_quota(
        per_second in 1u32..200,
        burst in 1u32..20,
        arrivals in proptest::collection::vec((0u64..30, 0u32..3, 1u32..4), 1..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let layer = RateLimitLayer::builder(Quota::per_second(per_second).burst(burst))
                .keyed(|r: &(u32, u32)| r.0)
                .cost(|r: &(u32, u32)| r.1)
                .build()
                .unwrap();
            let svc = layer.layer(service_fn(|r: (u32, u32)| async move { Ok::<_, BoxError>(r) }));
            let start = tokio::time::Instant::now();
            let mut admitted = [0u64; 3];
            for (gap_ms, key, cost) in arrivals {
                advance(Duration::from_millis(gap_ms)).await;
                if svc.clone().oneshot((key, cost)).await.is_ok() {
                    admitted[key as usize] += u64::from(cost);
                }
                let elapsed = start.elapsed().as_secs_f64();
                let bound = f64::from(burst) + f64::from(per_second) * elapsed;
                for a in admitted {
                    prop_assert!(a as f64 <= bound + 1e-9, "admitted {} > {}", a, bound);
                }
            }
            Ok(())
        })?;
    }
}

/// A remote-style store: answers later, with a fixed verdict.
struct LaterStore(backpressure_rate::Verdict);

impl backpressure_rate::RateStore<()> for LaterStore {
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<backpressure_rate::Decision, BoxError>> + Send>,
    >;

    fn check(&self, _: &(), _: u32, _: Duration) -> backpressure_rate::Check<Self::Future> {
        let verdict = self.0;
        backpressure_rate::Check::Pending(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let info = backpressure_core::RateLimitInfo::new(
                10,
                10,
                Duration::from_secs(1),
                9,
                Duration::ZERO,
            );
            Ok(backpressure_rate::Decision::new(verdict, info))
        }))
    }

    fn quota(&self) -> Quota {
        Quota::per_second(10)
    }
}

/// An asynchronous store decides from the future, after `call` returned:
/// the inner call (at once, or after a reserved wait) must still run inside
/// the request's deadline. The first version called it plainly.
#[tokio::test(start_paused = true)]
async fn the_deadline_survives_an_asynchronous_store() {
    use backpressure_rate::Verdict;
    for verdict in [Verdict::Allow, Verdict::AllowAfter(Duration::from_millis(5))] {
        let layer = RateLimitLayer::with_store(LaterStore(verdict))
            .max_wait(Duration::from_millis(50))
            .build()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let s = std::sync::Arc::clone(&seen);
        let mut svc = layer.layer(service_fn(move |n: u32| {
            *s.lock().unwrap() = Some(backpressure_core::Deadline::current());
            async move { Ok::<_, BoxError>(n) }
        }));
        let deadline = backpressure_core::Deadline::after(Duration::from_secs(2));
        svc.ready().await.unwrap();
        let fut = deadline.scope(|| svc.call(7));
        assert_eq!(fut.await.unwrap(), 7);
        assert_eq!(*seen.lock().unwrap(), Some(Some(deadline)), "{verdict:?}");
    }
}

/// Reserves (see `DirectStore`): a thread alone admits exactly what the
/// bucket without reserves admits, request by request, whatever the
/// arrivals. A burst of 4,096 gives every core a reserve on any machine (up
/// to 64 stripes).
#[tokio::test(start_paused = true)]
async fn with_reserves_a_thread_alone_admits_exactly_what_the_bucket_does() {
    use backpressure_rate::{Check, DirectStore};
    let quota = Quota::per_second(5_000).burst(4_096);
    let store = DirectStore::new(quota).unwrap();
    let exact = DirectStore::new(quota).unwrap();
    let start = tokio::time::Instant::now();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let (mut admitted, mut rejected) = (0, 0);
    for i in 0..50_000u32 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Bursts of back-to-back arrivals, then gaps up to 2 ms.
        if state.is_multiple_of(8) {
            advance(Duration::from_micros(state % 2_000)).await;
        }
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap();
        let ours = match RateStore::<()>::check(&store, &(), 1, Duration::ZERO) {
            Check::Ready(d) => d.unwrap(),
            Check::Pending(_) => unreachable!("in memory"),
        };
        let theirs = exact.decide_at(now, 1, Duration::ZERO);
        assert_eq!(ours.verdict, theirs.verdict, "arrival {i} at {now} ns");
        if matches!(ours.verdict, Verdict::Allow) {
            admitted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(admitted > 4_096 && rejected > 1_000, "both sides seen: {admitted} / {rejected}");
}

/// Many threads on one bucket with reserves: never more than
/// `burst + rate × elapsed` admitted (every unit is paid for before it is
/// used), and the units held in reserves at the end are all that was taken
/// and not used (at most a sixteenth of the burst).
#[test]
fn with_reserves_many_threads_never_exceed_the_bucket() {
    use backpressure_rate::{Check, DirectStore};
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let (rate, burst) = (20_000u32, 8_192u32);
    let store = Arc::new(DirectStore::new(Quota::per_second(rate).burst(burst)).unwrap());
    let admitted = Arc::new(AtomicU64::new(0));
    let start = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, admitted) = (Arc::clone(&store), Arc::clone(&admitted));
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    if let Check::Ready(Ok(d)) =
                        RateStore::<()>::check(&*store, &(), 1, Duration::ZERO)
                        && matches!(d.verdict, Verdict::Allow)
                    {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let bound = f64::from(burst) + f64::from(rate) * elapsed;
    println!("admitted {admitted} in {elapsed:.3} s; the bucket allows {bound:.0}");
    assert!(admitted <= bound + 1.0, "{admitted} > {bound}");
    assert!(admitted >= f64::from(burst) * 15.0 / 16.0, "{admitted}: most of the burst at least");
}

/// A check served from a core's reserve reads no clock; its header
/// information is the bucket's as it is when asked (the layer asks at
/// once): the same as a check that went to the bucket at that moment.
#[tokio::test(start_paused = true)]
async fn a_reserved_check_reports_the_bucket_as_it_is() {
    use backpressure_rate::{Check, DirectStore};
    let store = DirectStore::new(Quota::per_second(1_000).burst(4_096)).unwrap();
    let check = |store: &DirectStore| match RateStore::<()>::check(store, &(), 1, Duration::ZERO) {
        Check::Ready(d) => d.unwrap(),
        Check::Pending(_) => unreachable!("in memory"),
    };
    // The first check takes a batch from the bucket (and reports after it).
    let first = check(&store).info();
    let reserved = check(&store);
    assert_eq!(reserved.verdict, Verdict::Allow);
    assert_eq!(reserved.info(), first, "same bucket, same moment");
    advance(Duration::from_millis(3)).await;
    let later = check(&store).info();
    assert_eq!(later.reset, first.reset - Duration::from_millis(3));
    assert_eq!(later.remaining, first.remaining + 3, "three units came back in 3 ms");
}
