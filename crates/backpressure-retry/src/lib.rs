//! Retries that cannot storm, for any tower service.
//!
//! A slow or failing upstream makes callers time out; if every caller then
//! retries, the upstream gets two or three times the traffic exactly when it
//! can serve the least. [`RetryLayer`] retries only what is safe and useful,
//! and never more than a [`RetryBudget`] allows:
//!
//! - only requests its [`Policy`] can replay (idempotent, body in memory);
//! - only on outcomes worth retrying (connection errors, 502/503/504, gRPC
//!   `UNAVAILABLE`; a 429 only after its `Retry-After`);
//! - at most `max_attempts`, with capped exponential backoff and full jitter,
//!   never past the request's deadline;
//! - retries ≤ `ratio` × requests + a small floor per second, shared by all
//!   clients of the budget: a failing upstream sees ≤ (1 + ratio) × the
//!   traffic, where a naive three-attempt retry triples it.
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use backpressure_retry::{HttpRetry, RetryLayer};
//! use tower::ServiceBuilder;
//!
//! let retry = RetryLayer::new(HttpRetry::new());
//! let svc = ServiceBuilder::new()
//!     .layer(retry.clone())
//!     .service_fn(|req: http::Request<String>| async move {
//!         Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
//!     });
//! # let _ = (svc, retry.handle().snapshot());
//! # }
//! ```
//!
//! Every attempt waits for the inner service's readiness in the response
//! future, so each retry passes the breaker, concurrency limit and rate
//! limit below again; the layer's own `poll_ready` is always ready.
//!
//! # Features
//!
//! - `http`: [`HttpRetry`], the rules for `http::Request`/`Response`
//!   (gRPC's trailers-only statuses included), and [`ReplayBody`].
//! - `metrics`: retry and denial counters (see [`metrics`]).

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
mod future;
#[cfg(feature = "http")]
mod http;
mod layer;
pub mod metrics;
mod policy;
mod service;

pub use backoff::Backoff;
pub use budget::{RetryBudget, RetryBudgetBuilder, RetryBudgetSnapshot};
pub use future::ResponseFuture;
#[cfg(feature = "http")]
pub use http::{DefaultIdempotent, HttpRetry, Idempotent, ReplayBody};
pub use layer::{RetryBuilder, RetryHandle, RetryLayer, RetrySnapshot};
pub use policy::{FnPolicy, Policy, Verdict};
pub use service::Retry;
