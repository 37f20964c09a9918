//! A gRPC service behind the server preset: tonic-health's `Health` service
//! (generated code ships with the crate, so no protoc is needed).
//!
//! ```text
//! cargo run --example tonic                 # serves on 127.0.0.1:50051
//! cargo run --example tonic -- --smoke      # a self-check on a free port, then exits
//! ```
//!
//! Rejections come back as gRPC statuses in a trailers-only response:
//! `RESOURCE_EXHAUSTED` (rate limited, with `grpc-retry-pushback-ms`),
//! `UNAVAILABLE` (overloaded or circuit open), `DEADLINE_EXCEEDED`; an
//! incoming `grpc-timeout` becomes the request's deadline. With grpcurl:
//!
//! ```text
//! for i in $(seq 25); do grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check; done
//! ```
//!
//! Here the whole server is wrapped (`Server::builder().layer(preset)`); to
//! protect one service of several, wrap it alone with
//! `backpressure::http::named(&preset, service)`, which keeps the name
//! tonic routes by.

use std::net::SocketAddr;

use backpressure::{
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

async fn smoke(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut client = HealthClient::new(channel);
    let mut codes = Vec::new();
    for _ in 0..25 {
        match client.check(HealthCheckRequest { service: String::new() }).await {
            Ok(_) => codes.push(Code::Ok),
            Err(status) => codes.push(status.code()),
        }
    }
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    let exhausted = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    println!("25 checks in a row: {ok} OK, {exhausted} RESOURCE_EXHAUSTED");
    if ok != 20 || exhausted != 5 {
        return Err(format!("expected 20 OK then 5 RESOURCE_EXHAUSTED, got {codes:?}").into());
    }
    println!("smoke test passed");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let smoke_test = std::env::args().any(|a| a == "--smoke");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    // respond -> timeout (honours grpc-timeout) -> rate limit (20 at once,
    // 10/s; for the whole server here) -> adaptive concurrency limit (no
    // priority header named, so no priority shedding).
    let preset = ServerPreset::new()
        .rate_limit(RateLimitLayer::builder(Quota::per_second(10).burst(20)).build()?);
    let listener =
        TcpListener::bind(if smoke_test { "127.0.0.1:0" } else { "127.0.0.1:50051" }).await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .layer(preset)
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener));
    if smoke_test {
        tokio::spawn(server);
        return smoke(addr).await;
    }
    println!("gRPC health service on {addr}");
    server.await?;
    Ok(())
}
