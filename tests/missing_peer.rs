//! What happens to requests with no peer address. In a test binary of its
//! own: `ClientIp::missing_peer_count` is process-wide, and
//! `tests/preset.rs` asserts that requests with a peer leave it unchanged.

use backpressure::{
    http::ClientIp,
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
};

/// No peer address: a shared bucket by default, or refused with
/// `RefuseUnknownPeer` — a documented choice, and counted either way.
#[tokio::test(start_paused = true)]
async fn a_missing_peer_shares_a_bucket_or_is_refused() {
    use backpressure::http::RefuseUnknownPeer;
    use tower::{Layer, ServiceExt};

    let ok = tower::service_fn(|_: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    });
    let shared = ServerPreset::new()
        .rate_limit(
            RateLimitLayer::builder(Quota::per_minute(10)).keyed(ClientIp::peer()).build().unwrap(),
        )
        .layer(ok);
    let refusing = ServerPreset::new()
        .rate_limit(
            RateLimitLayer::builder(Quota::per_minute(10))
                .keyed(ClientIp::peer())
                .cost(RefuseUnknownPeer)
                .build()
                .unwrap(),
        )
        .layer(ok);
    let before = ClientIp::missing_peer_count();
    let res = shared.oneshot(http::Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), 200, "the shared bucket");
    let res = refusing.oneshot(http::Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), 429, "refused");
    assert!(res.headers().get("retry-after").is_none(), "waiting will not help");
    assert!(ClientIp::missing_peer_count() >= before + 2, "counted either way");
}
