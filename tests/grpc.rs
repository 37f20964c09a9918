//! The server preset in front of a tonic gRPC service (tonic-health: no
//! protoc needed), called through a tonic client over loopback: rejections
//! come back as gRPC statuses.

use std::net::SocketAddr;

use backpressure::{
    breaker::{BreakerHandle, CircuitBreakerLayer},
    core::HttpClassify,
    http::named,
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
};
use tokio::net::TcpListener;
use tonic::{
    Code,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

type Preset = ServerPreset<RateLimitLayer, CircuitBreakerLayer<HttpClassify>>;

fn preset(per_minute: u32) -> (Preset, BreakerHandle) {
    let breaker = CircuitBreakerLayer::builder().classify(HttpClassify).build().unwrap();
    let handle = breaker.handle();
    let preset = ServerPreset::new()
        .rate_limit(
            RateLimitLayer::builder(Quota::per_minute(per_minute).burst(per_minute))
                .build()
                .unwrap(),
        )
        .breaker(breaker);
    (preset, handle)
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    HealthClient::new(channel)
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest { service: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_reach_a_tonic_client_as_grpc_statuses() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let (preset, breaker) = preset(2);
    let (listener, addr) = listener().await;
    tokio::spawn(
        Server::builder()
            .layer(preset)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut client = client(addr).await;

    let ok = client.check(check()).await.unwrap();
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);

    // An open circuit: UNAVAILABLE.
    breaker.force_open();
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    breaker.reset();

    // Two requests a minute are spent: RESOURCE_EXHAUSTED, with the time to
    // wait in grpc-retry-pushback-ms.
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30_000).contains(&pushback), "{pushback}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_wrapped_with_named_still_routes() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let (preset, _breaker) = preset(1);
    let (listener, addr) = listener().await;
    tokio::spawn(
        Server::builder()
            .add_service(named(&preset, health))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let mut client = client(addr).await;
    client.check(check()).await.unwrap();
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
}
