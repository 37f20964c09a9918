//! Priority-aware load shedding for tower: when the service is saturated,
//! drop the least important work first, cheaply, before it costs anything.
//!
//! ```
//! use backpressure_concurrency::ConcurrencyLimitLayer;
//! use backpressure_core::{BoxError, Priority};
//! use backpressure_shed::LoadShedLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // The shedder reads the limiter's occupancy: sheddable work goes first,
//! // long before critical work would have to queue.
//! let limit = ConcurrencyLimitLayer::builder().limit(100).priority(|p: &Priority| *p).build()?;
//! let shed = LoadShedLayer::builder(limit.handle()).priority(|p: &Priority| *p).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(shed)
//!     .layer(limit)
//!     .service_fn(|p: Priority| async move { Ok::<_, BoxError>(p) });
//!
//! assert_eq!(svc.oneshot(Priority::Sheddable).await?, Priority::Sheddable);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **Decided in `call`** from a [`Pressure`](backpressure_core::Pressure)
//!   signal (0 idle, 1 at capacity, above 1 overloaded) and the request's
//!   [`Priority`](backpressure_core::Priority). A shed request fails at once
//!   with `Rejected(Overloaded)`, with a `retry_after` hint when the signal
//!   has one. `poll_ready` is the inner service's.
//! - **Ramps, not switches**: each priority is shed with a probability that
//!   rises linearly from its threshold's `start` to its `full`
//!   ([`Thresholds`], defaults documented there). Inside a ramp a lock-free
//!   pseudo-random draw decides, so the admitted rate falls smoothly.
//! - **Signals**: a concurrency limiter's handle (`(in-flight + queued)`
//!   occupancy, read without locks), [`LagSignal`] (event-loop lag, one
//!   probe task per signal), the layer's own in-flight count
//!   ([`in_flight_limit`](LoadShedBuilder::in_flight_limit)), any
//!   `Fn() -> f64`, and [`MaxOf`] several.
//! - **tower's classic mode** too ([`shed_when_not_ready`](LoadShedBuilder::shed_when_not_ready)):
//!   reject when the inner service is not ready — but not when it is only
//!   yielding because the task's co-operative budget ran out.
//! - **Cheap**: stateless per request, lock-free, no allocation on the admit
//!   path; shed counts per priority through [`LoadShedLayer::handle`],
//!   `tracing` (`trace`) and, with the `metrics` feature,
//!   `backpressure_shed_{requests,admitted,rejected}_total{name, priority}`
//!   (counted per core, published by the library once a second).
//!
//! # Differences from `tower::load_shed`
//!
//! | | tower | this crate |
//! |---|---|---|
//! | signal | the inner service not ready | any pressure signal, or readiness |
//! | priorities | none | four, shed least important first |
//! | shape | on/off | probabilistic ramp per priority |
//! | co-operative yield | read as overload | passed through |
//! | error | `Overloaded` | `Rejected(Overloaded)` with a retry hint |

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod curve;
mod future;
mod handle;
mod layer;
mod metrics;
mod service;
mod signal;

pub use curve::Thresholds;
pub use future::ResponseFuture;
pub use handle::{LoadShedHandle, LoadShedSnapshot};
pub use layer::{LoadShedBuilder, LoadShedLayer};
pub use service::LoadShed;
pub use signal::{LagSignal, MaxOf, NoSignal, ProbeWatch};
