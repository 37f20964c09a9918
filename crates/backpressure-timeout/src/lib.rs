//! A tower timeout whose deadline covers the whole request: waiting for the
//! inner service to become ready *and* the call. With deadline propagation.
//!
//! ```
//! use std::time::Duration;
//! use backpressure_core::{BoxError, RejectKind, Rejected};
//! use backpressure_timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(100))?)
//!     .service_fn(|work: Duration| async move {
//!         tokio::time::sleep(work).await;
//!         Ok::<_, BoxError>("done")
//!     });
//!
//! assert_eq!(svc.clone().oneshot(Duration::from_millis(10)).await?, "done");
//!
//! let err = svc.oneshot(Duration::from_secs(1)).await.unwrap_err();
//! assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::DeadlineExceeded);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **One deadline per request**, fixed when the request arrives in `call`:
//!   the earliest of the configured timeout (or the
//!   [per-request](TimeoutLayer::per_request) one), a deadline an outer layer
//!   put in scope ([`Deadline::current`](backpressure_core::Deadline::current)),
//!   and one the request carries (`grpc-timeout`, with [`HttpDeadline`]).
//! - **Readiness is covered.** `poll_ready` is always ready. It asks the
//!   inner service once: ready now, and `call` dispatches to it at once;
//!   not ready, and the response future clones the inner service (so
//!   `S: Clone`, as axum, tonic and reqwest services are), awaits *its*
//!   readiness, then calls it — under the deadline. An inner service stuck
//!   not-ready fails the request at its deadline instead of hanging it.
//! - **On expiry** the future resolves to
//!   [`Rejected`](backpressure_core::Rejected) of kind
//!   [`DeadlineExceeded`](backpressure_core::RejectKind::DeadlineExceeded),
//!   and the inner future is dropped at once (cancelling its work). A request
//!   whose deadline has already passed on arrival is never dispatched.
//! - **Inner layers see the deadline**: the inner `call` runs inside
//!   [`Deadline::scope`](backpressure_core::Deadline::scope), so a
//!   concurrency queue or a rate limiter's bounded wait further in never
//!   waits past it.
//! - **Cheap**: no state, `Clone`, no allocation per request, and the timer
//!   is only created when the inner service or its future is not
//!   immediately ready.
//!
//! # Differences from `tower::timeout`
//!
//! | | `tower::timeout::Timeout` | this crate |
//! |---|---|---|
//! | time waiting for readiness | not covered (tower#648) | covered |
//! | timer | created on every call | created only when something is pending |
//! | error | `Elapsed` | `Rejected(DeadlineExceeded)`, one type for every layer |
//! | deadline from outer layers / `grpc-timeout` | ignored | the earliest wins |
//! | inner layers can read the deadline | no | [`Deadline::current`](backpressure_core::Deadline::current) |
//! | zero timeout | accepted (fails everything) | [`ConfigError`](backpressure_core::ConfigError) |
//!
//! # Features
//!
//! - `http`: [`HttpDeadline`], which honours an incoming `grpc-timeout`, stores
//!   the deadline in request extensions (server side), or writes the remaining
//!   budget as `grpc-timeout` (client side).
//! - `metrics`: `backpressure_timeout_expired_total{name="timeout"}`, the
//!   requests this crate's timeouts failed (a counter counted in the process
//!   and published by the library once a second; the layer holds no state,
//!   so every timeout layer of the process adds to the one series).

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod future;
pub mod grpc;
mod layer;
mod metrics;
mod propagate;
mod send;
mod service;

pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
#[cfg(feature = "http")]
pub use propagate::HttpDeadline;
pub use propagate::{Local, Propagate, RequestTimeout};
pub use send::{SendDeadline, SendDeadlineLayer, SendFuture};
pub use service::Timeout;
