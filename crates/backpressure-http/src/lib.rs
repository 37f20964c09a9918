//! HTTP and gRPC glue for the `backpressure` layers.
//!
//! - [`RespondLayer`]: the outermost layer of a server stack. Rejections
//!   become 429 / 503 / 504 (or gRPC `RESOURCE_EXHAUSTED` / `UNAVAILABLE` /
//!   `DEADLINE_EXCEEDED`) with `Retry-After`, `RateLimit-Policy`, `RateLimit`
//!   or `grpc-retry-pushback-ms`; other errors an empty 500. The stack's
//!   error becomes `Infallible`, so it drops into `axum::Router::layer` with
//!   no `HandleErrorLayer`.
//! - Extractors: [`ClientIp`] (peer address, or `n` trusted proxies back
//!   through `Forwarded` / `X-Forwarded-For`), [`HeaderKey`], [`PathKey`],
//!   [`MethodKey`], [`PriorityHeader`].
//! - Client side: [`PushbackLayer`] holds (or refuses) new requests to an
//!   upstream that answered with `Retry-After` or `grpc-retry-pushback-ms`.
//!
//! ```
//! use std::time::Duration;
//! use backpressure_concurrency::ConcurrencyLimitLayer;
//! use backpressure_http::{ClientIp, RespondLayer};
//! use backpressure_rate::{Quota, RateLimitLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), backpressure_core::ConfigError> {
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(RespondLayer::new())
//!             .layer(RateLimitLayer::builder(Quota::per_second(50)).keyed(ClientIp::peer()).build()?)
//!             .layer(ConcurrencyLimitLayer::new(64)?),
//!     );
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Body-held permits for streaming responses are an option of the
//! concurrency limit (`hold_until_body_end`, feature `http` of
//! `backpressure-concurrency`). With the `tonic` feature, [`named`] keeps a
//! gRPC service's `NamedService` name through any layer.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod extract;
mod metrics;
#[cfg(feature = "tonic")]
mod named;
mod pushback;
mod ratelimit_headers;
mod respond;

pub use extract::{
    ClientIp, ForwardingHeader, HeaderKey, InvalidIpRange, IpRange, MethodKey, PathKey,
    PriorityHeader, RefuseUnknownPeer, client_ip, peer_ip,
};
#[cfg(feature = "tonic")]
pub use named::{Named, named};
pub use pushback::{
    PushbackBuilder, PushbackFuture, PushbackHandle, PushbackLayer, PushbackMode, PushbackService,
    PushbackSnapshot,
};
pub use ratelimit_headers::{RateLimitHeaders, RateLimitHeadersFuture, RateLimitHeadersLayer};
pub use respond::{
    Internal, OnError, Respond, RespondFuture, RespondLayer, insert_rate_limit,
    insert_x_rate_limit, rejection_response,
};
