//! Behaviour of `TimeoutLayer` through its public API, under paused time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, RejectKind, Rejected};
use backpressure_timeout::TimeoutLayer;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn kind(err: &BoxError) -> Option<RejectKind> {
    Rejected::find(err).map(Rejected::kind)
}

fn layer(ms: u64) -> TimeoutLayer {
    TimeoutLayer::new(Duration::from_millis(ms)).expect("valid timeout")
}

#[tokio::test(start_paused = true)]
async fn completes_before_the_deadline() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(1);
    let mut fut = task::spawn(svc.call("hi"));
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.expect("request reached the inner service");
    assert_eq!(req, "hi");
    advance(Duration::from_millis(99)).await;
    send.send_response("ok");
    assert_eq!(assert_ready!(fut.poll()).expect("answered in time"), "ok");
}

#[tokio::test(start_paused = true)]
async fn expires_during_the_call() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(1);
    let mut fut = task::spawn(svc.call("slow"));
    assert_pending!(fut.poll());
    let (_req, _send) = handle.next_request().await.expect("dispatched");
    advance(Duration::from_millis(99)).await;
    assert_pending!(fut.poll());
    advance(Duration::from_millis(1)).await;
    let err = assert_ready!(fut.poll()).expect_err("deadline passed");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    let rejected = Rejected::find(&err).unwrap();
    assert_eq!(rejected.layer().map(|n| n.as_str()), Some("timeout"));
}

#[tokio::test(start_paused = true)]
async fn expires_while_the_inner_service_is_not_ready() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(0); // the inner service never becomes ready
    // Our poll_ready never waits: the request gets in and its deadline starts.
    assert!(svc.ready().await.is_ok());
    let mut fut = task::spawn(svc.call("stuck"));
    assert_pending!(fut.poll());
    advance(Duration::from_millis(100)).await;
    let err = assert_ready!(fut.poll()).expect_err("deadline covers readiness");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    // And the request was never dispatched.
    handle.allow(1);
    assert!(tokio::time::timeout(Duration::from_millis(10), handle.next_request()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn readiness_wait_counts_against_the_same_deadline() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(0);
    let mut fut = task::spawn(svc.call("late start"));
    assert_pending!(fut.poll());
    advance(Duration::from_millis(60)).await;
    handle.allow(1);
    assert_pending!(fut.poll());
    let (_req, _send) = handle.next_request().await.expect("dispatched once ready");
    // 60 ms were spent waiting for readiness: 40 remain, not 100.
    advance(Duration::from_millis(40)).await;
    let err = assert_ready!(fut.poll()).expect_err("one deadline for the whole request");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(1);
    let mut fut = task::spawn(svc.call("x"));
    assert_pending!(fut.poll());
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    let err = assert_ready!(fut.poll()).expect_err("inner error");
    assert_eq!(err.to_string(), "boom");
    assert!(Rejected::find(&err).is_none());
}

/// Sets a flag when dropped: proves the inner future was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_on_expiry() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let inner = service_fn(move |_: ()| {
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        }
    });
    let mut svc = layer(50).layer(inner);
    let mut fut = task::spawn(svc.call(()));
    assert_pending!(fut.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    advance(Duration::from_millis(50)).await;
    let err = assert_ready!(fut.poll()).expect_err("expired");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    // Dropped when the error was produced, not when our future is dropped.
    assert!(dropped.load(Ordering::SeqCst));
    drop(fut);
}

#[tokio::test(start_paused = true)]
async fn an_outer_deadline_earlier_than_ours_wins() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(1_000).layer(inner);
    handle.allow(1);
    let outer = Deadline::after(Duration::from_millis(30));
    let mut fut = task::spawn(outer.scope(|| svc.call("x")));
    assert_pending!(fut.poll());
    let _pending = handle.next_request().await.unwrap();
    advance(Duration::from_millis(30)).await;
    let err = assert_ready!(fut.poll()).expect_err("the outer 30 ms deadline applies");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn our_deadline_wins_when_earlier_than_the_outer_one() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(30).layer(inner);
    handle.allow(1);
    let outer = Deadline::after(Duration::from_secs(10));
    let mut fut = task::spawn(outer.scope(|| svc.call("x")));
    assert_pending!(fut.poll());
    let _pending = handle.next_request().await.unwrap();
    advance(Duration::from_millis(30)).await;
    let err = assert_ready!(fut.poll()).expect_err("our 30 ms deadline applies");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn nested_timeouts_take_the_earlier_and_inner_layers_see_it() {
    // The innermost service reports the deadline it sees in scope. It reads
    // it in `call` (the closure), not in the future: the scope is open only
    // while `call` runs.
    let seen = service_fn(|_: ()| {
        let current = Deadline::current();
        async move { Ok::<_, BoxError>(current) }
    });
    let start = Instant::now();
    let inner = layer(5_000).layer(seen);
    let svc = layer(200).layer(inner);
    let fut = svc.oneshot(());
    // `Deadline::current` is read inside the innermost `call`, where both
    // timeouts' scopes are open.
    let seen_deadline = fut.await.expect("fast").expect("a deadline was in scope");
    assert_eq!(seen_deadline.instant(), start + Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_request_expired_on_arrival_is_never_dispatched() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let mut svc = layer(100).layer(inner);
    handle.allow(1);
    let gone = Deadline::at(Instant::now());
    let mut fut = task::spawn(gone.scope(|| svc.call("too late")));
    let err = assert_ready!(fut.poll()).expect_err("already expired");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    assert!(tokio::time::timeout(Duration::from_millis(10), handle.next_request()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn per_request_timeouts() {
    let slow = service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let svc = layer(100)
        .per_request(|ms: &u64| (*ms >= 1_000).then_some(Duration::from_secs(2)))
        .layer(slow);
    assert_eq!(svc.clone().oneshot(1_500).await.expect("long requests get 2 s"), 1_500);
    let err = svc.clone().oneshot(150).await.expect_err("others keep the default 100 ms");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[tokio::test(start_paused = true)]
async fn rejected_is_found_through_a_wrapping_layer() {
    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer middleware failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }
    let never = service_fn(|_: ()| std::future::pending::<Result<(), BoxError>>());
    let svc = layer(10).layer(never).map_err(|e: BoxError| -> BoxError { Box::new(Wrapped(e)) });
    let err = svc.oneshot(()).await.expect_err("expired");
    assert_eq!(err.to_string(), "outer middleware failed");
    assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
}

#[cfg(feature = "http")]
mod http_propagation {
    use super::*;
    use backpressure_timeout::HttpDeadline;

    fn grpc_request(timeout: &str) -> http::Request<()> {
        http::Request::builder()
            .header("content-type", "application/grpc")
            .header("grpc-timeout", timeout)
            .body(())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_incoming_grpc_timeout_earlier_than_ours_wins() {
        let (inner, mut handle) = mock::pair::<http::Request<()>, ()>();
        let mut svc = layer(1_000).propagate(HttpDeadline::server()).layer(inner);
        handle.allow(1);
        let start = Instant::now();
        let mut fut = task::spawn(svc.call(grpc_request("50m")));
        assert_pending!(fut.poll());
        let (req, _send) = handle.next_request().await.unwrap();
        // Stored in extensions for handlers and inner layers.
        let stored = req.extensions().get::<Deadline>().copied().expect("deadline extension");
        assert_eq!(stored.instant(), start + Duration::from_millis(50));
        advance(Duration::from_millis(50)).await;
        let err = assert_ready!(fut.poll()).expect_err("grpc-timeout applies");
        assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    }

    #[tokio::test(start_paused = true)]
    async fn our_timeout_wins_over_a_later_grpc_timeout() {
        let (inner, mut handle) = mock::pair::<http::Request<()>, ()>();
        let mut svc = layer(40).propagate(HttpDeadline::server()).layer(inner);
        handle.allow(1);
        let start = Instant::now();
        let mut fut = task::spawn(svc.call(grpc_request("10S")));
        assert_pending!(fut.poll());
        let (req, _send) = handle.next_request().await.unwrap();
        let stored = req.extensions().get::<Deadline>().copied().unwrap();
        assert_eq!(stored.instant(), start + Duration::from_millis(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_grpc_timeout_is_ignored() {
        for bad in ["", "fast", "1", "10s", "123456789m", "-5m", "5 m", "5mm"] {
            let (inner, mut handle) = mock::pair::<http::Request<()>, ()>();
            let mut svc = layer(100).propagate(HttpDeadline::server()).layer(inner);
            handle.allow(1);
            let start = Instant::now();
            let mut fut = task::spawn(svc.call(grpc_request(bad)));
            assert_pending!(fut.poll());
            let (req, send) = handle.next_request().await.unwrap();
            let stored = req.extensions().get::<Deadline>().copied().unwrap();
            assert_eq!(stored.instant(), start + Duration::from_millis(100), "{bad:?}");
            send.send_response(());
            assert_ready!(fut.poll()).expect("served");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_grpc_timeout_is_rejected_without_dispatch() {
        let (inner, mut handle) = mock::pair::<http::Request<()>, ()>();
        let mut svc = layer(100).propagate(HttpDeadline::server()).layer(inner);
        handle.allow(1);
        let mut fut = task::spawn(svc.call(grpc_request("0m")));
        let err = assert_ready!(fut.poll()).expect_err("no budget");
        assert_eq!(kind(&err), Some(RejectKind::DeadlineExceeded));
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_writes_the_budget_left_at_dispatch() {
        let (inner, mut handle) = mock::pair::<http::Request<()>, ()>();
        let client = HttpDeadline::client().margin(Duration::from_millis(5));
        let mut svc = layer(2_000).propagate(client).layer(inner);
        handle.allow(0);
        let mut fut = task::spawn(svc.call(http::Request::new(())));
        assert_pending!(fut.poll());
        // 500 ms waiting for the client to be ready are not promised downstream.
        advance(Duration::from_millis(500)).await;
        handle.allow(1);
        assert_pending!(fut.poll());
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(req.headers()["grpc-timeout"], "1495000u");
        assert!(req.extensions().get::<Deadline>().is_none(), "client mode stores nothing");
    }
}
