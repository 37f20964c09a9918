//! Tower layers that keep a slow component from taking a system down.
//!
//! When a fast producer meets a slow consumer — an API taking 10,000
//! requests/s in front of a database that handles 2,000 — every request the
//! consumer cannot serve has to go somewhere. Without backpressure it goes
//! into a queue nobody bounded: memory fills, latency climbs, clients time
//! out and retry, and the system tips over. The layers of this crate make the
//! producer *feel* the slow consumer instead: a bounded wait, or a clean
//! rejection with a reason and a time to retry.
//!
//! Every layer rejects with one error type,
//! [`Rejected`](core::Rejected), and keeps its state in an `Arc` held by the
//! layer value, so one layer applied to many services (axum clones routes per
//! connection) still enforces one limit.
//!
//! ```
//! use std::time::Duration;
//! use backpressure::{core::{BoxError, RejectKind, Rejected}, timeout::TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let slow_db = tower::service_fn(|_query: &'static str| async {
//!     tokio::time::sleep(Duration::from_secs(30)).await;
//!     Ok::<_, BoxError>("rows")
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(250))?)
//!     .service(slow_db);
//!
//! let err = svc.oneshot("SELECT 1").await.unwrap_err();
//! assert_eq!(Rejected::find(&err).map(Rejected::kind), Some(RejectKind::DeadlineExceeded));
//! # Ok(())
//! # }
//! ```
//!
//! # The layers
//!
//! | module | crate | status |
//! |---|---|---|
//! | [`core`] | `backpressure-core` | `Rejected`, `Classify`, `Deadline`, `Priority`, `ConfigError` |
//! | [`timeout`] | `backpressure-timeout` | deadline over readiness + call, `grpc-timeout` propagation |
//! | [`rate`] | `backpressure-rate` | GCRA, direct and keyed, bounded key memory, exact `Retry-After`, bounded wait, shadow mode |
//! | [`shed`] | `backpressure-shed` | priority-aware shedding on limiter occupancy, event-loop lag, in-flight or custom signals |
//! | [`breaker`] | `backpressure-breaker` | circuit breaker with sliding count/time windows, slow calls, backoff; SRE adaptive throttling |
//! | `http` (feature) | `backpressure-http` | `RespondLayer` (429/503/504, gRPC statuses, `Retry-After`, `RateLimit` headers), `ClientIp` with trusted hops, priority header, `PushbackLayer` for clients |
//! | `redis` (feature) | `backpressure-redis` | a `RateStore` on Redis or a Redis Cluster: one Lua round trip, Redis time, bounded failure modes |
//! | [`concurrency`] | `backpressure-concurrency` | fixed and adaptive (Gradient2, AIMD, Vegas) limits, bounded FIFO/LIFO/CoDel queue, priorities |
//! | [`retry`] | `backpressure-retry` | retries within a budget, full-jitter backoff, never past the deadline; HTTP/gRPC idempotency and `Retry-After` rules |
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `http` | HTTP and gRPC in every layer: `RespondLayer` (429/503/504 or gRPC statuses, `Retry-After`, `RateLimit` headers), `ClientIp`, the priority header, deadline propagation, the `ServerPreset` and `ClientPreset` |
//! | `axum` | `http`, and `ClientIp::peer()` reads axum's `ConnectInfo` (serve with `into_make_service_with_connect_info::<SocketAddr>()`) |
//! | `tonic` | `http`, `Named` keeps a tonic service's name through the layers, and `ClientIp::peer()` reads tonic's `TcpConnectInfo` |
//! | `metrics` | counters, gauges and a histogram through the `metrics` facade in every layer, kept by the library: the `metrics` module lists them |
//! | `redis` | `backpressure::redis`: a global rate limit on Redis or a Redis Cluster |
//! | `fast-clock` | the CPU's timestamp counter for rate limits (`with_fast_clock`), as governor uses, instead of tokio's clock |
//!
//! None is on by default.
//!
//! With the `http` feature, [`preset::ServerPreset`] stacks them in the
//! recommended order in front of an axum or tonic service, and its docs
//! explain the order and what goes wrong in the others.
//! [`client::ClientPreset`] does the same in front of an HTTP or gRPC
//! client: total deadline, retries within a budget, the upstream's
//! pushback obeyed, adaptive throttling, an AIMD limit, and the deadline
//! propagated downstream.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The shared vocabulary: rejections, outcomes, deadlines, priorities.
pub use backpressure_core as core;

/// Timeouts whose deadline covers readiness and the call, with propagation.
pub use backpressure_timeout as timeout;

/// Concurrency limits, fixed or adaptive, with a bounded, deadline- and
/// priority-aware queue.
pub use backpressure_concurrency as concurrency;

/// GCRA rate limits, direct and per key, in bounded memory.
pub use backpressure_rate as rate;

/// Priority-aware load shedding on pressure signals.
pub use backpressure_shed as shed;

/// Circuit breakers with sliding windows, and adaptive client-side throttling.
pub use backpressure_breaker as breaker;

/// Retries within a budget, with full-jitter backoff, never past the
/// deadline.
pub use backpressure_retry as retry;

/// HTTP and gRPC glue: rejections as responses, client-IP and priority
/// extractors (feature `http`).
#[cfg(feature = "http")]
pub use backpressure_http as http;

/// The server preset: the whole stack in the recommended order (feature
/// `http`).
#[cfg(feature = "http")]
pub mod preset;

/// The client preset: the client stack in the recommended order (feature
/// `http`).
#[cfg(feature = "http")]
pub mod client;

#[cfg(feature = "metrics")]
pub mod metrics;

/// A global rate limit on Redis (feature `redis`).
#[cfg(feature = "redis")]
pub use backpressure_redis as redis;
