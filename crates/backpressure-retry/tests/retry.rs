//! The retry layer's behaviour under paused time.
#![cfg(feature = "http")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering::SeqCst},
    },
    time::Duration,
};

use backpressure_core::{BoxError, Deadline};
use backpressure_retry::{Backoff, HttpRetry, RetryBudget, RetryLayer};
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Req = Request<String>;

/// Records each attempt: when it arrived, its body, its deadline in scope.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Attempt>>>);

/// When an attempt arrived, its body, the deadline in its scope.
type Attempt = (Instant, String, Option<Deadline>);

impl Log {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().iter().map(|e| e.0).collect()
    }
}

fn server(
    log: Log,
    answer: impl Fn(u32) -> Response<()> + Clone + Send + 'static,
) -> impl Service<Req, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone {
    let n = Arc::new(AtomicU32::new(0));
    service_fn(move |req: Req| {
        log.0.lock().unwrap().push((Instant::now(), req.body().clone(), Deadline::current()));
        let i = n.fetch_add(1, SeqCst);
        let res = answer(i);
        async move { Ok::<_, BoxError>(res) }
    })
}

fn status(code: u16) -> Response<()> {
    Response::builder().status(code).body(()).unwrap()
}

fn layer(attempts: u32) -> RetryLayer<HttpRetry> {
    RetryLayer::builder(HttpRetry::new())
        .max_attempts(attempts)
        .backoff(Backoff::new(Duration::from_millis(10), Duration::from_millis(100)).unwrap())
        .budget(
            RetryBudget::builder().ratio(1.0).min_per_sec(100.0).max_saved(100).build().unwrap(),
        )
        .seed(1)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_a_503_until_success_and_resends_the_body_intact() {
    let log = Log::default();
    let layer = layer(3);
    let svc = layer.layer(server(log.clone(), |i| status(if i < 2 { 503 } else { 200 })));
    let req = Request::put("http://db/row/1").body("the payload".to_string()).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let entries = log.0.lock().unwrap().clone();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.1 == "the payload"));
    let s = layer.handle().snapshot();
    assert_eq!((s.attempts, s.retries), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_answer() {
    let log = Log::default();
    let svc = layer(3).layer(server(log.clone(), |_| status(502)));
    let res = svc.oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(log.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_never_retried() {
    let log = Log::default();
    let svc = layer(5).layer(server(log.clone(), |_| status(503)));
    let res = svc.oneshot(Request::post("/").body("x".to_string()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(log.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_429_without_retry_after_are_final() {
    for code in [400, 404, 429, 500] {
        let log = Log::default();
        let svc = layer(3).layer(server(log.clone(), move |_| status(code)));
        let _ = svc.oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
        assert_eq!(log.len(), 1, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let log = Log::default();
    let svc = layer(2).layer(server(log.clone(), |i| {
        if i == 0 {
            Response::builder().status(429).header("retry-after", "2").body(()).unwrap()
        } else {
            status(200)
        }
    }));
    let res = svc.oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let t = log.times();
    assert!(t[1] - t[0] >= Duration::from_secs(2), "{:?}", t[1] - t[0]);
}

#[tokio::test(start_paused = true)]
async fn never_retries_past_the_deadline_and_each_attempt_sees_it() {
    let log = Log::default();
    let deadline = Deadline::after(Duration::from_millis(250));
    let retry = RetryLayer::builder(HttpRetry::new())
        .max_attempts(10)
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(100)).unwrap())
        .budget(RetryBudget::builder().ratio(10.0).build().unwrap())
        .seed(3)
        .build()
        .unwrap();
    let mut svc = retry.layer(server(log.clone(), |_| status(503)));
    let fut = deadline.scope(|| svc.call(Request::get("/").body(String::new()).unwrap()));
    let res = fut.await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let entries = log.0.lock().unwrap().clone();
    assert!(entries.len() >= 2, "{}", entries.len());
    for e in &entries {
        assert!(e.0 < deadline.instant(), "an attempt was sent after the deadline");
        assert_eq!(e.2, Some(deadline), "the attempt did not see the deadline");
    }
    assert!(retry.handle().snapshot().denied_by_deadline >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_ends_the_retries_at_once() {
    let log = Log::default();
    let svc = layer(3).layer(server(log.clone(), |_| {
        Response::builder().status(503).header("retry-after", "5").body(()).unwrap()
    }));
    let start = Instant::now();
    let mut svc = svc;
    let fut = Deadline::after(Duration::from_secs(1))
        .scope(|| svc.call(Request::get("/").body(String::new()).unwrap()));
    let res = fut.await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(log.len(), 1);
    assert_eq!(Instant::now(), start, "it must not wait for a retry it will not send");
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_amplification_against_a_dead_upstream() {
    let log = Log::default();
    let ratio = 0.1;
    let floor = 1.0;
    let retry = RetryLayer::builder(HttpRetry::new())
        .max_attempts(3)
        .budget(RetryBudget::builder().ratio(ratio).min_per_sec(floor).build().unwrap())
        .seed(5)
        .build()
        .unwrap();
    let svc = retry.layer(server(log.clone(), |_| status(503)));
    let start = Instant::now();
    let requests = 1000;
    for _ in 0..requests {
        let _ = svc.clone().oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let elapsed = (Instant::now() - start).as_secs_f64();
    let bound = (1.0 + ratio) * requests as f64 + floor * (1.0 + elapsed);
    let sent = log.len() as f64;
    assert!(sent <= bound, "{sent} attempts > bound {bound}");
    // A naive 3-attempt retry would have sent 3000.
    assert!(sent < 1.2 * requests as f64);
    let s = retry.handle().snapshot();
    assert!(s.denied_by_budget > 800, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_backoff_sends_nothing_more() {
    let log = Log::default();
    let svc = layer(3).layer(server(log.clone(), |_| status(503)));
    let fut = svc.oneshot(Request::get("/").body(String::new()).unwrap());
    let mut fut = Box::pin(fut);
    assert!(futures_poll(&mut fut).is_none());
    assert_eq!(log.len(), 1);
    drop(fut);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(log.len(), 1);
}

fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A retry needs time left to be worth sending: with 4 ms left (less than
/// `min_attempt_time`), the 504 the request already has is the answer. The
/// first version retried into the client preset's 5 ms send margin, and the
/// send layer's `DeadlineExceeded` replaced the 504 (a flaky
/// `tests/client.rs`).
#[tokio::test(start_paused = true)]
async fn no_retry_without_time_for_an_attempt() {
    let log = Log::default();
    let svc = service_fn({
        let log = log.clone();
        move |req: Req| {
            log.0.lock().unwrap().push((Instant::now(), req.body().clone(), Deadline::current()));
            async move {
                tokio::time::sleep(Duration::from_millis(96)).await;
                Ok::<_, BoxError>(status(504))
            }
        }
    });
    let retry = RetryLayer::builder(HttpRetry::new())
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_micros(1), Duration::from_micros(2)).unwrap())
        .seed(1)
        .build()
        .unwrap();
    let mut svc = retry.layer(svc);
    let deadline = Deadline::after(Duration::from_millis(100));
    svc.ready().await.unwrap();
    let fut = deadline.scope(|| svc.call(Request::get("/").body(String::new()).unwrap()));
    assert_eq!(fut.await.unwrap().status(), 504, "the answer it had");
    assert_eq!(log.len(), 1, "no retry with 4 ms left");
    assert_eq!(retry.handle().snapshot().denied_by_deadline, 1);
}
