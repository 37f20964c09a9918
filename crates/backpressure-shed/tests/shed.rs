//! Behaviour of `LoadShedLayer` through its public API, under paused time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use backpressure_concurrency::ConcurrencyLimitLayer;
use backpressure_core::{BoxError, Pressure, Priority, RejectKind, Rejected};
use backpressure_shed::{LagSignal, LoadShedLayer, MaxOf, Thresholds};
use tokio_test::{assert_pending, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

/// A signal the test drives.
#[derive(Clone, Default)]
struct Dial(Arc<AtomicU64>);

impl Dial {
    fn set(&self, pressure: f64) {
        self.0.store(pressure.to_bits(), Ordering::SeqCst);
    }
}

impl Pressure for Dial {
    fn pressure(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

fn echo() -> impl Service<Priority, Response = Priority, Error = BoxError, Future: Send> + Clone {
    service_fn(|p: Priority| async move { Ok::<_, BoxError>(p) })
}

/// Fraction of `n` requests of `priority` admitted at `pressure`.
async fn admitted_fraction<S>(
    svc: &S,
    dial: &Dial,
    priority: Priority,
    pressure: f64,
    n: u32,
) -> f64
where
    S: Service<Priority, Response = Priority, Error = BoxError> + Clone,
{
    dial.set(pressure);
    let mut ok = 0;
    for _ in 0..n {
        match svc.clone().oneshot(priority).await {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(Rejected::find(&e).unwrap().kind(), RejectKind::Overloaded),
        }
    }
    f64::from(ok) / f64::from(n)
}

#[tokio::test(start_paused = true)]
async fn each_priority_is_shed_from_its_threshold_on() {
    let dial = Dial::default();
    let layer =
        LoadShedLayer::builder(dial.clone()).priority(|p: &Priority| *p).seed(7).build().unwrap();
    let svc = layer.layer(echo());
    let t = Thresholds::default();
    for p in Priority::ALL {
        let (start, full) = t.get(p);
        assert_eq!(admitted_fraction(&svc, &dial, p, start, 500).await, 1.0, "{p} at its start");
        assert_eq!(admitted_fraction(&svc, &dial, p, start - 0.1, 500).await, 1.0, "{p} below");
        assert_eq!(admitted_fraction(&svc, &dial, p, full, 500).await, 0.0, "{p} at its full");
        assert_eq!(admitted_fraction(&svc, &dial, p, full + 1.0, 500).await, 0.0, "{p} above");
    }
    let snap = layer.handle().snapshot();
    assert_eq!(snap.shed_of(Priority::Sheddable), 1_000);
}

#[tokio::test(start_paused = true)]
async fn the_ramp_admits_the_configured_fraction() {
    let dial = Dial::default();
    let layer =
        LoadShedLayer::builder(dial.clone()).priority(|p: &Priority| *p).seed(42).build().unwrap();
    let svc = layer.layer(echo());
    let n = 20_000;
    // Binomial sampling error at n = 20,000 is at most 0.0035 (one sigma);
    // the tolerance is 0.015, over four sigma.
    for (priority, pressure, expected) in [
        (Priority::Sheddable, 1.0, 0.5),
        (Priority::Sheddable, 0.95, 0.75),
        (Priority::Critical, 1.95, 0.5),
        (Priority::CriticalPlus, 2.45, 0.1),
    ] {
        let got = admitted_fraction(&svc, &dial, priority, pressure, n).await;
        println!("{priority} at {pressure}: admitted {got:.4}, expected {expected}");
        assert!((got - expected).abs() < 0.015, "{priority} at {pressure}: {got} vs {expected}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_occupancy_signal_tracks_a_real_concurrency_limit() {
    let limit = ConcurrencyLimitLayer::builder().limit(10).max_queue(10).build().unwrap();
    let handle = limit.handle();
    let shed = LoadShedLayer::builder(handle.clone())
        .priority(|p: &(Priority, u64)| p.0)
        .seed(1)
        .build()
        .unwrap();
    let backend = service_fn(|(p, ms): (Priority, u64)| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(p)
    });
    let mut svc = shed.layer(limit.layer(backend));
    let mut held = Vec::new();
    for i in 1..=10u32 {
        let mut f = task::spawn(svc.call((Priority::Critical, 1_000)));
        assert_pending!(f.poll());
        held.push(f);
        assert!((handle.pressure() - f64::from(i) / 10.0).abs() < 1e-9);
    }
    // Every permit in use: pressure 1.0. Critical work still queues (its
    // ramp starts at 1.9)...
    let mut queued = task::spawn(svc.call((Priority::CriticalPlus, 1)));
    assert_pending!(queued.poll());
    assert_eq!(handle.queued(), 1);
    assert!((handle.pressure() - 1.1).abs() < 1e-9);
    // ...while sheddable work, at the end of its ramp, is shed.
    let err = svc.call((Priority::Sheddable, 1)).await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::Overloaded);
    drop(held);
    drop(queued);
    assert_eq!(handle.pressure(), 0.0);
    assert_eq!(svc.call((Priority::Sheddable, 1)).await.unwrap(), Priority::Sheddable);
}

#[tokio::test(start_paused = true)]
async fn the_lag_signal_rises_when_the_loop_is_blocked_and_its_probe_stops_when_dropped() {
    let (lag, watch) =
        LagSignal::spawn_watched(Duration::from_millis(10), Duration::from_millis(50)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lag.pressure(), 0.0, "an idle loop fires timers on time");
    // The clock jumps 200 ms while no task runs: exactly what a blocked
    // runtime looks like to a timer.
    tokio::time::advance(Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(lag.pressure() > 3.0, "lag {:?} -> pressure {}", lag.lag(), lag.pressure());
    // It decays once the loop is healthy again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lag.pressure() < 0.1, "recovered: {}", lag.pressure());
    assert!(watch.is_running());
    drop(lag);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!watch.is_running(), "the probe task ends with its signal");
}

#[tokio::test(start_paused = true)]
async fn max_of_and_in_flight_signals() {
    let a = Dial::default();
    let b = Dial::default();
    a.set(0.2);
    b.set(0.6);
    let both = MaxOf::new(vec![Box::new(a.clone()), Box::new(b.clone())]);
    assert_eq!(both.pressure(), 0.6);

    // In-flight: at 3 of 2, pressure 1.5 is past Sheddable's full (1.1),
    // and at Critical's start.
    let layer = LoadShedLayer::builder(backpressure_shed::NoSignal)
        .priority(|r: &(Priority, u64)| r.0)
        .in_flight_limit(2)
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|(p, ms): (Priority, u64)| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(p)
    }));
    let mut one = task::spawn(svc.call((Priority::Critical, 100)));
    let mut two = task::spawn(svc.call((Priority::Critical, 100)));
    let mut three = task::spawn(svc.call((Priority::Critical, 100)));
    assert_pending!(one.poll());
    assert_pending!(two.poll());
    assert_pending!(three.poll());
    assert_eq!(layer.handle().snapshot().in_flight, Some(3));
    assert!(svc.call((Priority::Sheddable, 1)).await.is_err());
    tokio::time::advance(Duration::from_millis(100)).await;
    one.await.unwrap();
    two.await.unwrap();
    three.await.unwrap();
    assert_eq!(layer.handle().snapshot().in_flight, Some(0));
    assert!(svc.call((Priority::Sheddable, 1)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn not_ready_sheds_but_a_cooperative_yield_does_not() {
    // A genuinely stuck inner service, with budget to spare: shed.
    let (inner, mut handle) = mock::pair::<Priority, Priority>();
    handle.allow(0);
    let mut svc = LoadShedLayer::builder(backpressure_shed::NoSignal)
        .shed_when_not_ready(true)
        .build()
        .unwrap()
        .layer(inner);
    svc.ready().await.expect("ready to reject");
    let err = svc.call(Priority::Critical).await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::Overloaded);

    // An inner service that is ready, but co-operative: with the task's
    // budget spent it yields `Pending`. That must not be read as overload.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..1_000 {
        tx.send(()).unwrap();
    }
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    #[derive(Clone)]
    struct Coop(Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>>);
    impl Service<Priority> for Coop {
        type Response = Priority;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Priority, BoxError>>;
        fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
            let mut rx = self.0.try_lock().expect("uncontended");
            // A message is always there; only the co-operative budget can
            // make this Pending.
            rx.poll_recv(cx).map(|_| Ok(()))
        }
        fn call(&mut self, p: Priority) -> Self::Future {
            std::future::ready(Ok(p))
        }
    }
    let mut svc = LoadShedLayer::builder(backpressure_shed::NoSignal)
        .shed_when_not_ready(true)
        .build()
        .unwrap()
        .layer(Coop(Arc::clone(&rx)));
    let outcome = std::future::poll_fn(|cx| {
        // Spend the whole budget of this poll.
        let mut polls = 0;
        while svc.get_ref().0.try_lock().unwrap().poll_recv(cx).is_ready() {
            polls += 1;
            assert!(polls < 10_000, "the budget never ran out");
        }
        Poll::Ready(svc.poll_ready(cx).is_pending())
    })
    .await;
    assert!(outcome, "a co-operative yield is passed through as Pending, not shed");
    // Next poll, fresh budget: ready and served.
    assert_eq!(
        svc.ready().await.unwrap().call(Priority::Critical).await.unwrap(),
        Priority::Critical
    );
}

#[tokio::test(start_paused = true)]
async fn critical_work_survives_a_sheddable_flood_at_ten_times_capacity() {
    // 20 permits at 10 ms = 2,000/s. Sheddable arrives at 20,000/s,
    // critical at 200/s; both give up after 100 ms in the queue.
    let limit = ConcurrencyLimitLayer::builder()
        .limit(20)
        .max_queue(40)
        .max_wait(Duration::from_millis(100))
        .priority(|p: &Priority| *p)
        .build()
        .unwrap();
    let shed =
        LoadShedLayer::builder(limit.handle()).priority(|p: &Priority| *p).seed(3).build().unwrap();
    let backend = service_fn(|p: Priority| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(p)
    });
    let svc = shed.layer(limit.layer(backend));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut sent, mut ok) = (0u32, 0u32);
    let mut count = |done: Result<Result<Priority, BoxError>, tokio::task::JoinError>| {
        if let Ok(Ok(Priority::Critical)) = done {
            ok += 1;
        }
    };
    for tick in 0..2_000u32 {
        for _ in 0..20 {
            tasks.spawn(svc.clone().oneshot(Priority::Sheddable));
        }
        if tick % 5 == 0 {
            sent += 1;
            tasks.spawn(svc.clone().oneshot(Priority::Critical));
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        while let Some(done) = tasks.try_join_next() {
            count(done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        count(done);
    }
    let rate = f64::from(ok) / f64::from(sent);
    println!("critical admitted and served: {ok}/{sent} = {:.1} %", rate * 100.0);
    assert!(rate >= 0.95, "critical success {:.1} %", rate * 100.0);
}

#[test]
fn invalid_configurations_name_their_field() {
    let bad = LoadShedLayer::builder(backpressure_shed::NoSignal)
        .thresholds(Thresholds::default().set(Priority::CriticalPlus, 0.1, 0.2))
        .build();
    assert_eq!(bad.unwrap_err().field(), "thresholds");
    let bad = LoadShedLayer::builder(backpressure_shed::NoSignal).in_flight_limit(0).build();
    assert_eq!(bad.unwrap_err().field(), "in_flight_limit");
}
