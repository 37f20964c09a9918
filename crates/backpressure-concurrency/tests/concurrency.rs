//! Behaviour of `ConcurrencyLimitLayer` through its public API, under paused
//! time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backpressure_concurrency::{ConcurrencyLimitLayer, Discipline};
use backpressure_core::{BoxError, Deadline, Priority, RejectKind, Rejected};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn kind(err: &BoxError) -> Option<RejectKind> {
    Rejected::find(err).map(Rejected::kind)
}

/// A service taking `ms` per request, counting how many run at once.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

struct Running(Arc<AtomicUsize>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gauge {
    fn service<Req: Send + 'static>(
        &self,
        ms: u64,
    ) -> impl Service<Req, Response = Req, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let (now, peak) = (Arc::clone(&self.now), Arc::clone(&self.peak));
        service_fn(move |req: Req| {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            let guard = Running(Arc::clone(&now));
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                drop(guard);
                Ok::<_, BoxError>(req)
            }
        })
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_shared_by_clones_and_by_every_service_of_one_layer() {
    let layer = ConcurrencyLimitLayer::builder().limit(3).max_queue(100).build().unwrap();
    let handle = layer.handle();
    let gauge = Gauge::default();
    // Two services built from the layer (as axum does per connection), and
    // clones of each (as axum does per request).
    let a = layer.layer(gauge.service::<u32>(100));
    let b = layer.clone().layer(gauge.service::<u32>(100));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(svc.oneshot(i)));
    }
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 3);
    assert_eq!(handle.queued(), 7);
    for t in tasks {
        t.await.unwrap().expect("all served within max_wait");
    }
    assert_eq!(gauge.peak(), 3);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_queue(1).build().unwrap();
    let mut svc = layer.layer(Gauge::default().service::<()>(1_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    let mut queued = task::spawn(svc.call(()));
    assert_pending!(queued.poll());
    let mut rejected = task::spawn(svc.call(()));
    let err = assert_ready!(rejected.poll()).expect_err("queue full");
    assert_eq!(kind(&err), Some(RejectKind::Overloaded));
    assert_eq!(layer.handle().snapshot().rejected_overloaded, 1);
}

#[tokio::test(start_paused = true)]
async fn zero_queue_rejects_instead_of_waiting() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_queue(0).build().unwrap();
    let mut svc = layer.layer(Gauge::default().service::<()>(1_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    let err = assert_ready!(task::spawn(svc.call(())).poll()).expect_err("no queue");
    assert_eq!(kind(&err), Some(RejectKind::Overloaded));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_times_out_after_max_wait() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut svc = layer.layer(Gauge::default().service::<()>(1_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    let mut queued = task::spawn(svc.call(()));
    assert_pending!(queued.poll());
    advance(Duration::from_millis(49)).await;
    assert_pending!(queued.poll());
    advance(Duration::from_millis(1)).await;
    let err = assert_ready!(queued.poll()).expect_err("waited too long");
    assert_eq!(kind(&err), Some(RejectKind::QueueTimeout));
    let snap = layer.handle().snapshot();
    assert_eq!((snap.queued, snap.rejected_queue_timeout), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_never_waits_past_its_deadline() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut svc = layer.layer(Gauge::default().service::<()>(1_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    // An outer timeout layer's deadline, 30 ms away.
    let deadline = Deadline::after(Duration::from_millis(30));
    let mut queued = task::spawn(deadline.scope(|| svc.call(())));
    assert_pending!(queued.poll());
    advance(Duration::from_millis(30)).await;
    let err = assert_ready!(queued.poll()).expect_err("deadline");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_is_not_queued() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).build().unwrap();
    let mut svc = layer.layer(Gauge::default().service::<()>(1_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    let gone = Deadline::at(tokio::time::Instant::now());
    let err = assert_ready!(task::spawn(gone.scope(|| svc.call(()))).poll()).expect_err("no time");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    assert_eq!(layer.handle().snapshot().queued_total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_free_permit_goes_to_the_queue_not_to_a_newcomer() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).build().unwrap();
    let handle = layer.handle();
    let (inner, mut mock) = mock::pair::<u32, u32>();
    let mut svc = layer.layer(inner);
    mock.allow(10);
    let mut first = task::spawn(svc.call(1));
    assert_pending!(first.poll());
    let (_, respond_first) = mock.next_request().await.unwrap();
    let mut second = task::spawn(svc.call(2));
    assert_pending!(second.poll());
    respond_first.send_response(1);
    assert_eq!(assert_ready!(first.poll()).unwrap(), 1);
    // The permit was handed to `second` on release: a newcomer finds none.
    assert_eq!(handle.in_flight(), 1);
    let mut newcomer = task::spawn(svc.call(3));
    assert_pending!(newcomer.poll());
    assert!(second.is_woken());
    assert_pending!(second.poll());
    let (req, _respond) = mock.next_request().await.unwrap();
    assert_eq!(req, 2);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_awaited_while_holding_the_permit() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_queue(0).build().unwrap();
    let (inner, mut mock) = mock::pair::<u32, u32>();
    let mut svc = layer.layer(inner);
    mock.allow(0);
    // poll_ready never waits on the limiter, whatever the inner service does.
    assert!(svc.ready().await.is_ok());
    let mut first = task::spawn(svc.call(1));
    assert_pending!(first.poll());
    assert_eq!(layer.handle().in_flight(), 1, "the permit is held during readiness");
    mock.allow(1);
    assert_pending!(first.poll());
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response(7);
    assert_eq!(assert_ready!(first.poll()).unwrap(), 7);
    assert_eq!(layer.handle().in_flight(), 0);
}

/// Every way a response future ends (answered, rejected, timed out in the
/// queue, the inner service failing readiness) answers an error, not a
/// panic, when polled again, and gives its permit back exactly once.
#[tokio::test(start_paused = true)]
async fn a_finished_future_polled_again_errs_and_holds_nothing() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(1)
        .max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let (inner, mut mock) = mock::pair::<u32, u32>();
    let mut svc = layer.layer(inner);
    mock.allow(1);
    assert!(svc.ready().await.is_ok());
    let mut answered = task::spawn(svc.call(1));
    assert_pending!(answered.poll());
    // The permit is taken: one queues (and times out), one is rejected.
    let mut queued = task::spawn(svc.call(2));
    assert_pending!(queued.poll());
    let mut rejected = task::spawn(svc.call(3));
    assert_eq!(kind(&assert_ready!(rejected.poll()).unwrap_err()), Some(RejectKind::Overloaded));
    advance(Duration::from_millis(11)).await;
    assert_eq!(kind(&assert_ready!(queued.poll()).unwrap_err()), Some(RejectKind::QueueTimeout));
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response(10);
    assert_eq!(assert_ready!(answered.poll()).unwrap(), 10);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
    for (name, fut) in
        [("answered", &mut answered), ("queued", &mut queued), ("rejected", &mut rejected)]
    {
        let err = assert_ready!(fut.poll()).expect_err(name);
        assert_eq!(kind(&err), None, "{name}: {err}");
        assert!(err.to_string().contains("after completion"), "{name}: {err}");
    }
    // Readiness failed while holding the permit: the error, then nothing.
    mock.allow(0);
    let mut failed = task::spawn(svc.call(4));
    assert_pending!(failed.poll());
    assert_eq!(handle.in_flight(), 1);
    drop(mock);
    let err = assert_ready!(failed.poll()).expect_err("the inner service is gone");
    assert_eq!(kind(&err), None, "{err}");
    assert_eq!(handle.in_flight(), 0, "the permit went back with the error");
    assert!(assert_ready!(failed.poll()).is_err());
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

/// Serves `n` queued requests one at a time and returns their order.
async fn service_order(discipline: Discipline, gap: Duration) -> Vec<u32> {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(4)
        .max_wait(Duration::from_secs(10))
        .discipline(discipline)
        .build()
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&order);
    let inner = service_fn(move |id: u32| {
        log.lock().unwrap().push(id);
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(id)
        }
    });
    let svc = layer.layer(inner);
    let mut tasks = Vec::new();
    for id in 0..5 {
        tasks.push(tokio::spawn(svc.clone().oneshot(id)));
        tokio::task::yield_now().await;
        advance(gap).await;
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    order.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn fifo_lifo_and_codel_orders() {
    // Request 0 runs at once; 1..=4 queue behind it.
    assert_eq!(service_order(Discipline::Fifo, Duration::ZERO).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(service_order(Discipline::Lifo, Duration::ZERO).await, vec![0, 4, 3, 2, 1]);
    // CoDel is FIFO while the queue is young...
    assert_eq!(service_order(Discipline::codel(), Duration::ZERO).await, vec![0, 1, 2, 3, 4]);
    // ...and once it has stood (filled to nine tenths, 3 of 4, and still
    // full an interval later), newest first.
    let congested = Discipline::Codel {
        target: Duration::from_secs(10),
        interval: Duration::from_millis(1),
        adaptive_lifo: true,
    };
    let order = service_order(congested, Duration::from_millis(1)).await;
    assert_eq!(order[0], 0);
    assert_eq!(order[1], 4, "newest first once congested: {order:?}");
}

/// One permit, a CoDel queue of `max_queue` (FIFO, 5 ms target, 100 ms
/// interval) whose waiters may otherwise wait 5 s.
fn codel_fifo_of_one(max_queue: usize) -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(max_queue)
        .max_wait(Duration::from_secs(5))
        .discipline(Discipline::Codel {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            adaptive_lifo: false,
        })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn codel_cuts_waits_short_once_the_queue_stands() {
    // A queue of 2: one waiter fills it to nine tenths.
    let layer = codel_fifo_of_one(2);
    let mut svc = layer.layer(Gauge::default().service::<()>(10_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    // The first waiter arrives at a draining queue: it may wait max_wait.
    let mut early = task::spawn(svc.call(()));
    assert_pending!(early.poll());
    advance(Duration::from_millis(150)).await;
    // An interval later the queue is still full: it stands, and a
    // newcomer gets 5 ms.
    let mut late = task::spawn(svc.call(()));
    assert_pending!(late.poll());
    advance(Duration::from_millis(5)).await;
    let err = assert_ready!(late.poll()).expect_err("cut short");
    assert_eq!(kind(&err), Some(RejectKind::QueueTimeout));
    // The early waiter is next in line: it waits for the one permit to
    // come free (one service time), not behind a queue, so it is not cut.
    assert_pending!(early.poll());
    drop(running);
    assert_pending!(early.poll()); // granted: now in the 10 s service
    assert_eq!((layer.handle().in_flight(), layer.handle().queued()), (1, 0));
}

/// CoDel's budget is not fixed at enqueue: requests that queued while the
/// queue was draining (and got `max_wait`) are cut as soon as the queue
/// stands and they have waited past `target` — here at the next permit
/// handed out — rather than served 150 ms stale or left to their 5 s.
#[tokio::test(start_paused = true)]
async fn codel_cuts_waiters_that_queued_before_the_queue_stood() {
    let layer = codel_fifo_of_one(3);
    let handle = layer.handle();
    let mut svc = layer.layer(Gauge::default().service::<()>(10_000));
    let mut running = task::spawn(svc.call(()));
    assert_pending!(running.poll());
    // Two waiters (nine tenths of 3) queue with a budget of 5 s each.
    let mut early = task::spawn(svc.call(()));
    assert_pending!(early.poll());
    let mut second = task::spawn(svc.call(()));
    assert_pending!(second.poll());
    advance(Duration::from_millis(150)).await;
    // The running request finishes: the queue has not drained in an
    // interval. The second waiter, a whole round of permits (one) behind
    // the head and 150 ms old, is cut instead of served stale or left to
    // its 5 s; the head is served.
    drop(running);
    let err = assert_ready!(second.poll()).expect_err("stale waiter cut");
    assert_eq!(kind(&err), Some(RejectKind::QueueTimeout));
    assert_pending!(early.poll()); // granted: now in the 10 s service
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn lower_priorities_only_get_their_share_of_the_limit() {
    // Shares are opt-in: the default is work-conserving (100 % each).
    let layer = ConcurrencyLimitLayer::builder()
        .limit(10)
        .max_queue(0)
        .priority(|p: &Priority| *p)
        .priority_share(Priority::Sheddable, 50)
        .priority_share(Priority::SheddablePlus, 75)
        .build()
        .unwrap();
    let mut svc = layer.layer(Gauge::default().service::<Priority>(1_000));
    let mut held = Vec::new();
    let mut admitted = 0;
    for _ in 0..10 {
        let mut f = task::spawn(svc.call(Priority::Sheddable));
        if f.poll().is_pending() {
            admitted += 1;
        }
        held.push(f);
    }
    assert_eq!(admitted, 5, "Sheddable may hold 50 % of the limit");
    let mut critical = 0;
    for _ in 0..10 {
        let mut f = task::spawn(svc.call(Priority::Critical));
        if f.poll().is_pending() {
            critical += 1;
        }
        held.push(f);
    }
    assert_eq!(critical, 5, "the reserved half is there for critical work");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_evicts_lower_priority_for_higher() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(2)
        .priority(|p: &Priority| *p)
        .build()
        .unwrap();
    let mut svc = layer.layer(Gauge::default().service::<Priority>(1_000));
    let mut running = task::spawn(svc.call(Priority::Critical));
    assert_pending!(running.poll());
    let mut low1 = task::spawn(svc.call(Priority::Sheddable));
    let mut low2 = task::spawn(svc.call(Priority::Sheddable));
    assert_pending!(low1.poll());
    assert_pending!(low2.poll());
    let mut high = task::spawn(svc.call(Priority::Critical));
    assert_pending!(high.poll());
    assert!(low1.is_woken());
    let err = assert_ready!(low1.poll()).expect_err("evicted");
    assert_eq!(kind(&err), Some(RejectKind::Overloaded));
    // Another sheddable finds the queue full of equals or betters.
    let err = assert_ready!(task::spawn(svc.call(Priority::Sheddable)).poll()).expect_err("full");
    assert_eq!(kind(&err), Some(RejectKind::Overloaded));
    assert_eq!(layer.handle().snapshot().evicted, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiter_that_was_handed_a_permit_passes_it_on() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_queue(2).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Gauge::default().service::<()>(10));
    let mut first = task::spawn(svc.call(()));
    assert_pending!(first.poll());
    let mut second = task::spawn(svc.call(()));
    assert_pending!(second.poll());
    let mut third = task::spawn(svc.call(()));
    assert_pending!(third.poll());
    advance(Duration::from_millis(10)).await;
    assert_ready!(first.poll()).unwrap();
    // `second` was handed the permit but is dropped before it notices.
    assert!(second.is_woken());
    drop(second);
    assert!(third.is_woken(), "the permit moved on");
    assert_pending!(third.poll());
    advance(Duration::from_millis(10)).await;
    assert_ready!(third.poll()).unwrap();
    assert_eq!((handle.in_flight(), handle.queued(), handle.slots_live()), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn critical_requests_keep_succeeding_under_a_sheddable_flood() {
    // 20 permits at 10 ms: 2,000 requests/s. Sheddable traffic arrives at
    // 20,000/s (10x), critical at 200/s; both give up after 100 ms.
    let layer = ConcurrencyLimitLayer::builder()
        .limit(20)
        .max_queue(40)
        .max_wait(Duration::from_millis(100))
        .priority(|p: &Priority| *p)
        .build()
        .unwrap();
    let svc = layer.layer(Gauge::default().service::<Priority>(10));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut critical_sent, mut critical_ok) = (0u32, 0u32);
    for tick in 0..2_000u32 {
        // One millisecond: 20 sheddable, and a critical one every 5 ms.
        for _ in 0..20 {
            tasks.spawn(svc.clone().oneshot(Priority::Sheddable));
        }
        if tick % 5 == 0 {
            critical_sent += 1;
            tasks.spawn(svc.clone().oneshot(Priority::Critical));
        }
        advance(Duration::from_millis(1)).await;
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Ok(Priority::Critical)) = done {
                critical_ok += 1;
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Ok(Priority::Critical)) = done {
            critical_ok += 1;
        }
    }
    let rate = f64::from(critical_ok) / f64::from(critical_sent);
    println!("critical success {critical_ok}/{critical_sent} = {:.1} %", rate * 100.0);
    assert!(rate >= 0.9, "critical success {:.1} %", rate * 100.0);
}

/// Not ready on its first `poll_ready` (across clones), ready after; each
/// call records the deadline it saw in scope.
#[derive(Clone, Default)]
struct SlowToStart {
    polls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Option<Deadline>>>>,
}

impl Service<u32> for SlowToStart {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.seen.lock().unwrap().push(Deadline::current());
        std::future::ready(Ok(req))
    }
}

/// Admitted at once but called later, once the inner service is ready:
/// the inner call still runs inside the request's deadline. On the first
/// version this path (`queued: None`) called the inner service plainly and
/// the layers below saw no deadline.
#[tokio::test(start_paused = true)]
async fn the_deadline_reaches_an_inner_call_made_after_readiness() {
    let layer = ConcurrencyLimitLayer::builder().limit(4).build().unwrap();
    let inner = SlowToStart::default();
    let mut svc = layer.layer(inner.clone());
    svc.ready().await.unwrap(); // inner said Pending: not dispatched directly
    let deadline = Deadline::after(Duration::from_secs(3));
    let fut = deadline.scope(|| svc.call(1));
    assert_eq!(fut.await.unwrap(), 1);
    assert_eq!(*inner.seen.lock().unwrap(), vec![Some(deadline)]);
}

/// Every duration `build()` accepts is usable: `Duration::MAX` means
/// "practically forever", not a panic in `Instant + Duration` when the
/// first request queues (the first version's behaviour).
#[tokio::test(start_paused = true)]
async fn a_max_wait_of_duration_max_queues_without_panicking() {
    let gauge = Gauge::default();
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_wait(Duration::MAX).build().unwrap();
    let svc = layer.layer(gauge.service(10));
    let a = tokio::spawn(svc.clone().oneshot(1u32));
    let b = tokio::spawn(svc.clone().oneshot(2u32));
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(b.await.unwrap().unwrap(), 2);
    assert_eq!(gauge.peak(), 1);
}

/// The limiter's own rejections say when to come back: how long requests
/// recently waited for a permit (measured), else `max_wait`. The first
/// version's 503s carried no `Retry-After` at all.
#[tokio::test(start_paused = true)]
async fn rejections_carry_a_measured_retry_after() {
    let gauge = Gauge::default();
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let svc = layer.layer(gauge.service(300));
    let hint = |err: &BoxError| Rejected::find(err).and_then(Rejected::retry_after);
    // Nothing measured yet: max_wait.
    let running = tokio::spawn(svc.clone().oneshot(1u32));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot(2u32));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(3u32).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectKind::Overloaded));
    assert_eq!(hint(&err), Some(Duration::from_secs(2)));
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap(); // it waited 300 ms for its permit
    // Measured: the queued request's wait.
    let running = tokio::spawn(svc.clone().oneshot(4u32));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot(5u32));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(6u32).await.unwrap_err();
    assert_eq!(hint(&err), Some(Duration::from_millis(300)));
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
}

/// Many cores on one limit: each core keeps a small reserve of permits (see
/// the `counter` module), and the limit must hold all the same, every
/// request must finish (none stranded in a queue while permits sit in a
/// reserve), and nothing may stay counted once all is done. A limit large
/// enough for reserves on any machine (up to 64 stripes), 8 worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn reserves_on_many_cores_keep_the_limit_and_strand_nobody() {
    let limit = 2_048;
    let layer = ConcurrencyLimitLayer::builder()
        .limit(limit)
        .max_queue(20_000)
        .max_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let handle = layer.handle();
    let gauge = Gauge::default();
    let svc = layer.layer(gauge.service::<u32>(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20_000u32 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(i).await });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        if done.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 20_000, "every request served");
    println!("peak {} of {limit}", gauge.peak());
    assert!(gauge.peak() <= limit, "peak {} over the limit {limit}", gauge.peak());
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

/// Counts the samples it is fed; the limit stays put.
#[derive(Debug, Clone)]
struct CountingAlgorithm(Arc<AtomicUsize>);

impl backpressure_concurrency::LimitAlgorithm for CountingAlgorithm {
    fn initial_limit(&self) -> usize {
        64
    }

    fn max_limit(&self) -> usize {
        64
    }

    fn update(
        &mut self,
        _now: tokio::time::Instant,
        _sample: backpressure_concurrency::Sample,
    ) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst);
        64
    }
}

/// Cores that find the adaptive algorithm busy buffer their samples (see
/// `Shared::record`) instead of waiting for it: none may be lost. 4 threads
/// race 20,000 requests; one more request after a quiet moment, from a
/// thread alone, feeds whatever is still buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_sample_is_lost_when_cores_race_for_the_adaptive_algorithm() {
    let fed = Arc::new(AtomicUsize::new(0));
    let layer = ConcurrencyLimitLayer::builder()
        .adaptive(CountingAlgorithm(Arc::clone(&fed)))
        .max_queue(100_000)
        .max_wait(Duration::from_secs(30))
        // Every request measured: the test counts them all.
        .max_sample_every(1)
        .build()
        .unwrap();
    let svc = layer.layer(Gauge::default().service::<u32>(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20_000u32 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(i).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    // A quiet moment (cores stop batching 10 ms after they last met the
    // algorithm taken), then one request.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = svc.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(last.oneshot(0)).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(fed.load(Ordering::SeqCst), 20_001);
}
