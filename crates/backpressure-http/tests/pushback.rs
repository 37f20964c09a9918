//! The client-side pushback gate, under paused time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, RejectKind, Rejected};
use backpressure_http::{PushbackLayer, PushbackMode};
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

/// An upstream answering from a script, logging arrival times.
fn upstream(
    log: Arc<Mutex<Vec<Instant>>>,
    answer: impl Fn(usize) -> Response<()> + Clone + Send + 'static,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(move |_req: Request<()>| {
        let mut log = log.lock().unwrap();
        log.push(Instant::now());
        let res = answer(log.len() - 1);
        async move { Ok::<_, BoxError>(res) }
    })
}

fn busy(header: &'static str, value: &'static str) -> Response<()> {
    Response::builder().status(503).header(header, value).body(()).unwrap()
}

fn get() -> Request<()> {
    Request::get("/").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn holds_new_requests_until_retry_after_then_resumes() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::new();
    let svc = layer.layer(upstream(log.clone(), |i| {
        if i == 0 { busy("retry-after", "2") } else { Response::new(()) }
    }));
    let start = Instant::now();
    let first = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(layer.handle().snapshot().remaining, Duration::from_secs(2));

    // Ten requests arrive during the pushback: none reaches the upstream
    // before 2 s, all go through after.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 * i)).await;
            svc.oneshot(get()).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1999)).await;
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "a request reached the upstream during its Retry-After"
    );
    assert_eq!(layer.handle().snapshot().held, 10);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 200);
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 11);
    assert!(log[1..].iter().all(|t| *t - start >= Duration::from_secs(2)));
    // Released over a window after the pushback, not as one burst: at most
    // a quarter of each request's hold (the longest hold was 2 s).
    assert!(log[1..].iter().all(|t| *t - start <= Duration::from_millis(2_500)));
    let mut distinct: Vec<_> = log[1..].to_vec();
    distinct.dedup();
    assert!(distinct.len() >= 8, "{} distinct release instants of 10", distinct.len());
    let s = layer.handle().snapshot();
    assert_eq!((s.held, s.holds, s.rejected, s.pushbacks), (0, 10, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn reject_mode_answers_rate_limited_with_the_time_left() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::builder().mode(PushbackMode::Reject).build().unwrap();
    let svc = layer.layer(upstream(log.clone(), |_| busy("retry-after", "3")));
    let _ = svc.clone().oneshot(get()).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    let err = svc.clone().oneshot(get()).await.unwrap_err();
    let r = Rejected::find(&err).expect("a Rejected");
    assert_eq!(r.kind(), RejectKind::RateLimited);
    assert_eq!(r.retry_after(), Some(Duration::from_millis(2500)));
    assert_eq!(log.lock().unwrap().len(), 1);
    tokio::time::advance(Duration::from_millis(2500)).await;
    let _ = svc.oneshot(get()).await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_pushback_is_rejected_at_once() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::builder().release_spread(0.0).build().unwrap();
    let mut svc = layer.layer(upstream(log.clone(), |_| busy("grpc-retry-pushback-ms", "1500")));
    let _ = svc.clone().oneshot(get()).await.unwrap();
    let start = Instant::now();
    let fut = Deadline::after(Duration::from_secs(1)).scope(|| svc.call(get()));
    let err = fut.await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::RateLimited);
    assert_eq!(Instant::now(), start);
    // A deadline that outlasts the pushback waits for it.
    let fut = Deadline::after(Duration::from_secs(2)).scope(|| svc.call(get()));
    fut.await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn held_requests_are_bounded_and_dropping_one_frees_its_slot() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::builder().max_held(2).build().unwrap();
    let mut svc = layer.layer(upstream(log.clone(), |i| {
        if i == 0 { busy("retry-after", "1") } else { Response::new(()) }
    }));
    let _ = svc.clone().oneshot(get()).await.unwrap();
    let a = svc.call(get());
    let b = svc.call(get());
    let err = svc.call(get()).await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::RateLimited);
    let s = layer.handle().snapshot();
    assert_eq!((s.held, s.rejected), (2, 1));
    drop(a);
    assert_eq!(layer.handle().snapshot().held, 1);
    let c = svc.call(get());
    assert_eq!(layer.handle().snapshot().held, 2);
    b.await.unwrap();
    c.await.unwrap();
    assert_eq!(layer.handle().snapshot().held, 0);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_retry_after_is_clamped_and_malformed_ones_ignored() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::builder()
        .max_pushback(Duration::from_secs(5))
        .release_spread(0.0)
        .build()
        .unwrap();
    let svc = layer.layer(upstream(log.clone(), |i| match i {
        0 => busy("retry-after", "999999999"),
        _ => busy("retry-after", "not a number"),
    }));
    let _ = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(layer.handle().snapshot().remaining, Duration::from_secs(5));
    let start = Instant::now();
    let _ = svc.clone().oneshot(get()).await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    // The malformed one armed nothing.
    assert_eq!(layer.handle().snapshot().remaining, Duration::ZERO);
    assert_eq!(layer.handle().snapshot().pushbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn a_200_with_retry_after_is_not_a_pushback() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = PushbackLayer::new();
    let svc = layer.layer(upstream(log, |_| {
        Response::builder().status(200).header("retry-after", "9").body(()).unwrap()
    }));
    let _ = svc.oneshot(get()).await.unwrap();
    assert_eq!(layer.handle().snapshot().pushbacks, 0);
}

#[test]
fn bad_fields_are_named() {
    assert_eq!(PushbackLayer::builder().max_held(0).build().unwrap_err().field(), "max_held");
    assert_eq!(
        PushbackLayer::builder().max_pushback(Duration::ZERO).build().unwrap_err().field(),
        "max_pushback"
    );
    assert_eq!(
        PushbackLayer::builder().release_spread(1.5).build().unwrap_err().field(),
        "release_spread"
    );
}
