//! The client side of deadline propagation.
#![cfg(feature = "http")]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, RejectKind, Rejected};
use backpressure_timeout::{HttpDeadline, SendDeadlineLayer, grpc::parse_grpc_timeout};
use http::{HeaderName, Request};
use tower::{Layer, Service, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<(Option<Duration>, Option<String>)>>>;

fn recorder(seen: Seen) -> impl Service<Request<()>, Response = (), Error = BoxError> + Clone {
    service_fn(move |req: Request<()>| {
        let grpc = req.headers().get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let ms = req.headers().get("x-timeout-ms").map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push((grpc, ms));
        async { Ok::<_, BoxError>(()) }
    })
}

#[tokio::test(start_paused = true)]
async fn each_send_carries_what_is_left_minus_the_margin() {
    let seen = Seen::default();
    let propagate = HttpDeadline::client()
        .margin(Duration::from_millis(5))
        .header(HeaderName::from_static("x-timeout-ms"));
    let mut svc = SendDeadlineLayer::new(propagate).layer(recorder(seen.clone()));
    let deadline = Deadline::after(Duration::from_millis(300));
    for _ in 0..3 {
        svc.ready().await.unwrap();
        deadline.scope(|| svc.call(Request::new(()))).await.unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (Some(Duration::from_millis(295)), Some("295".into())),
            (Some(Duration::from_millis(195)), Some("195".into())),
            (Some(Duration::from_millis(95)), Some("95".into())),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_is_not_sent() {
    let seen = Seen::default();
    let mut svc = SendDeadlineLayer::new(HttpDeadline::client()).layer(recorder(seen.clone()));
    let deadline = Deadline::after(Duration::from_millis(10));
    tokio::time::advance(Duration::from_millis(10)).await;
    svc.ready().await.unwrap();
    let err = deadline.scope(|| svc.call(Request::new(()))).await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::DeadlineExceeded);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_nothing_is_written() {
    let seen = Seen::default();
    let svc = SendDeadlineLayer::new(HttpDeadline::client()).layer(recorder(seen.clone()));
    svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(seen.lock().unwrap().clone(), vec![(None, None)]);
}

#[tokio::test(start_paused = true)]
async fn the_server_reads_the_millisecond_header_strictly() {
    use backpressure_timeout::Propagate;
    let server = HttpDeadline::server().header(HeaderName::from_static("x-timeout-ms"));
    let with = |v: &str| Request::builder().header("x-timeout-ms", v).body(()).unwrap();
    let now = tokio::time::Instant::now();
    assert_eq!(
        server.incoming(&with("250")).map(|d| d.instant() - now),
        Some(Duration::from_millis(250))
    );
    for bad in ["", "-1", "1e3", "250ms", "9999999999999"] {
        assert_eq!(server.incoming(&with(bad)), None, "{bad:?}");
    }
}

proptest::proptest! {
    /// Any bytes in the millisecond header: no panic, and only plain digits
    /// (at most 12) set a deadline — never a longer one than they say.
    #[test]
    fn the_millisecond_header_is_parsed_strictly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
        use backpressure_timeout::Propagate;
        let Ok(value) = http::HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let server = HttpDeadline::server().header(HeaderName::from_static("x-timeout-ms"));
            let req = Request::builder().header("x-timeout-ms", value).body(()).unwrap();
            let now = tokio::time::Instant::now();
            let got = server.incoming(&req).map(|d| d.instant() - now);
            let digits = !bytes.is_empty() && bytes.len() <= 12 && bytes.iter().all(u8::is_ascii_digit);
            if digits {
                let ms: u64 = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
                assert_eq!(got, Some(Duration::from_millis(ms)));
            } else {
                assert_eq!(got, None);
            }
        });
    }
}
