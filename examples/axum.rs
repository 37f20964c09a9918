//! An axum router behind the server preset: a per-IP rate limit, priorities
//! from a header, an adaptive concurrency limit, and `/metrics` in
//! Prometheus format.
//!
//! ```text
//! cargo run --example axum                # serves on 127.0.0.1:3000
//! cargo run --example axum -- --smoke     # a self-check on a free port, then exits
//! ```
//!
//! Then, from another terminal:
//!
//! ```text
//! # 429 with Retry-After and RateLimit headers: more than 10 requests at
//! # once (the burst), 5/s sustained, from one address.
//! for i in $(seq 15); do curl -s -o /dev/null -w '%{http_code} ' localhost:3000/; done; echo
//! curl -si localhost:3000/ | grep -i -E '^(HTTP|retry-after|ratelimit)'
//!
//! # 503: flood the slow endpoint (200 ms per request) from many addresses'
//! # worth of concurrency; sheddable work goes first. (The example opts in to
//! # priorities from `x-internal-priority`; in production, a header only your
//! # own services can set. `priority: …` from a client changes nothing.)
//! seq 400 | xargs -P 400 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
//!     -H 'x-internal-priority: sheddable' -H 'x-forwarded-for: 10.0.0.{}' localhost:3000/slow | sort | uniq -c
//!
//! # What the layers did (described series; the library keeps the gauges):
//! curl -s localhost:3000/metrics | grep backpressure_
//! ```
//!
//! A Grafana dashboard and Prometheus alert rules over these series are in
//! `examples/monitoring/` (`grafana-dashboard.json`, `alerts.yml`).
//!
//! # A slow endpoint that is not a bottleneck, with a real client
//!
//! `/slow` sleeps 200 ms and shares nothing: 400 connections can be served
//! at ≈2,000 requests/s, and the adaptive limit must get out of the way
//! (it slow-starts: it doubles while requests wait and latency stays flat).
//!
//! ```text
//! cargo run --release --example axum -- --addr 127.0.0.1:3111 --per-ip-rate 1000000
//! wrk -t1 -c400 -d20s --timeout 5s --latency http://127.0.0.1:3111/slow
//! curl -s localhost:3111/metrics | grep backpressure_concurrency_limit
//! ```
//!
//! `scripts/slow-endpoint.sh` runs exactly this and prints the limit every
//! 2 s; BENCHMARKS.md has the figures.
//!
//! (The rate limit keys on the connection's peer address; `x-forwarded-for`
//! is ignored unless you configure trusted proxy hops with
//! `ClientIp::x_forwarded_for(n)` or `ClientIp::trusted_ranges(…)`, so the
//! flood above is one client to it —
//! use `--per-ip-rate 1000` to let the flood reach the concurrency limit.)

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use backpressure::{
    concurrency::ConcurrencyLimitHandle,
    core::Priority,
    http::{ClientIp, PriorityHeader},
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

struct Args {
    addr: SocketAddr,
    smoke: bool,
    per_ip_rate: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".parse().expect("a valid address"),
        smoke: false,
        per_ip_rate: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--smoke" => args.smoke = true,
            "--addr" => {
                let v = it.next().ok_or("--addr needs a value")?;
                args.addr = v.parse().map_err(|_| format!("--addr: {v:?} is not an address"))?;
            }
            "--per-ip-rate" => {
                let v = it.next().ok_or("--per-ip-rate needs a value")?;
                args.per_ip_rate =
                    v.parse().map_err(|_| format!("--per-ip-rate: {v:?} is not a number"))?;
            }
            "-h" | "--help" => {
                println!("usage: axum [--addr 127.0.0.1:3000] [--per-ip-rate 5] [--smoke]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn app(
    per_ip_rate: u32,
    metrics: PrometheusHandle,
) -> Result<(Router, ConcurrencyLimitHandle), Box<dyn std::error::Error>> {
    // respond -> timeout (10 s) -> per-IP rate limit -> priority shedding ->
    // adaptive concurrency limit (Gradient2, queue of 100), in one layer.
    let preset = ServerPreset::new()
        .priority_header(PriorityHeader::new(
            http::HeaderName::from_static("x-internal-priority"),
            Priority::Critical,
        ))
        .rate_limit(
            RateLimitLayer::builder(Quota::per_second(per_ip_rate).burst(per_ip_rate * 2))
                .keyed(ClientIp::peer())
                .max_keys(100_000)
                .build()?,
        );
    let limit = preset.concurrency_handle();
    let api = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "slow hello\n"
            }),
        )
        .layer(preset);
    // The metrics endpoint sits outside the preset: scraping must work while
    // the API sheds. The library publishes every layer's counters and
    // gauges once a second; `flush` makes this scrape exact.
    let router = api.merge(Router::new().route(
        "/metrics",
        get(move || {
            backpressure::metrics::flush();
            std::future::ready(metrics.render())
        }),
    ));
    Ok((router, limit))
}

async fn smoke(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let res = client.get(format!("http://{addr}/").parse()?).await?;
        statuses.push(res.status().as_u16());
    }
    println!("15 requests in a row from one address: {statuses:?}");
    if !statuses.contains(&429) || !statuses.contains(&200) {
        return Err("expected both 200s and 429s".into());
    }
    let res = client.get(format!("http://{addr}/metrics").parse()?).await?;
    let body = res.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with("backpressure_")).collect();
    println!("/metrics:\n  {}", ours.join("\n  "));
    for expected in [
        "# HELP backpressure_concurrency_in_flight",
        r#"backpressure_rate_rejected_total{name="rate-limit",reason="rate_limited"}"#,
        r#"backpressure_concurrency_limit{name="server"} 20"#,
        r#"backpressure_http_responses_total{reason="rate_limited"}"#,
    ] {
        if !text.contains(expected) {
            return Err(format!("expected {expected:?} in /metrics").into());
        }
    }
    println!("smoke test passed");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("axum example: {e}"))?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let (router, _limit) = app(args.per_ip_rate, metrics)?;
    let listener =
        TcpListener::bind(if args.smoke { "127.0.0.1:0".parse()? } else { args.addr }).await?;
    let addr = listener.local_addr()?;
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>());
    if args.smoke {
        tokio::spawn(async move { server.await });
        return smoke(addr).await;
    }
    println!(
        "listening on http://{addr} (see the comment at the top of examples/axum.rs for curl commands)"
    );
    server.await?;
    Ok(())
}
