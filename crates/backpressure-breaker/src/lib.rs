//! Fail fast when a dependency is failing or slow — so callers stop piling
//! up behind it — and recover on its own. Plus adaptive client-side
//! throttling.
//!
//! ```
//! use std::time::Duration;
//! use backpressure_breaker::{CircuitBreakerLayer, SlidingWindow, State};
//! use backpressure_core::{BoxError, RejectKind, Rejected};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::builder()
//!     .window(SlidingWindow::Calls(10))
//!     .minimum_calls(5)
//!     .open_duration(Duration::from_secs(5))
//!     .build()?;
//! let handle = layer.handle();
//! let failing = layer.layer(service_fn(|()| async { Err::<(), BoxError>("db down".into()) }));
//!
//! for _ in 0..5 {
//!     let _ = failing.clone().oneshot(()).await;
//! }
//! assert_eq!(handle.state(), State::Open);
//! let err = failing.clone().oneshot(()).await.unwrap_err();
//! let rejected = Rejected::find(&err).unwrap();
//! assert_eq!(rejected.kind(), RejectKind::CircuitOpen);
//! assert_eq!(rejected.retry_after(), Some(Duration::from_secs(5)));
//! # Ok(())
//! # }
//! ```
//!
//! # The circuit breaker
//!
//! - **States**: `Closed`, `Open`, `HalfOpen`, plus `ForcedOpen` and
//!   `Disabled` through the [`BreakerHandle`], and a metrics-only mode that
//!   records but never trips. One state per layer value, shared by every
//!   service it builds.
//! - **Windows that really slide** ([`SlidingWindow`]): the last N calls (a
//!   ring with subtract-on-evict) or the last W seconds (buckets that reset
//!   themselves when reused). O(1) per call, lock-free on the closed path.
//!   A breaker that was healthy for 10,000 calls trips within one window of
//!   an outage (tower-resilience 0.13's count window never slid: after
//!   10,000 successes it needed 10,000 failures).
//! - **Trips** when, after at least `minimum_calls`, the failure rate or the
//!   slow-call rate reaches its threshold. What a failure is comes from the
//!   [`Classify`](backpressure_core::Classify) (default: errors other than
//!   our own rejections; `HttpClassify`: 5xx and 429): both
//!   `Outcome::Failure` and `Outcome::Overloaded` count.
//! - **Timeouts are failures.** A call dropped because its deadline passed —
//!   the timeout layer above cut it, inside
//!   [`Deadline::expired_scope`](backpressure_core::Deadline::expired_scope)
//!   — or dropped after the `slow_call` threshold, counts as a failure and a
//!   slow call: a dependency that hangs trips the breaker (with timeouts
//!   everywhere, a hang never produces an error of its own). A call dropped
//!   while its deadline was open (the client went away) is ignored, or a
//!   failure with `cancel_is_failure(true)`.
//! - **Open** for `open_duration`, optionally growing with consecutive
//!   re-opens ([`Backoff`]: exponential, capped, with jitter). Calls get
//!   `Rejected(CircuitOpen)` with `retry_after` = the remaining open time.
//!   The first call after it turns the breaker half-open: no background task,
//!   no polling timer.
//! - **Half-open** admits exactly `half_open_calls` probes across all clones
//!   and threads (the cold transitions take one mutex; only the closed path
//!   and the open-time check are atomics);
//!   a probe dropped unfinished gives its slot back; probes that never
//!   finish are bounded by `half_open_max_wait`; the probes' failure and slow
//!   rates close or reopen the breaker. A late probe from an earlier round
//!   is ignored.
//! - **Observable**: [`BreakerHandle::snapshot`], a state-change callback,
//!   `tracing` events on every transition, and with the `metrics` feature
//!   requests, admissions, rejections, call outcomes, trips, would-be trips
//!   in metrics-only mode and a state gauge (published by the library once a
//!   second; names in the `metrics` module's source and in `backpressure::metrics`).
//!
//! # Adaptive throttling
//!
//! [`AdaptiveThrottleLayer`]: Google SRE's client-side throttle, which
//! rejects locally with probability `max(0, (requests − K·accepts) /
//! (requests + 1))` — smooth, and with nothing to tune per service.
//!
//! # Differences from tower-resilience's circuit breaker
//!
//! | | tower-resilience 0.13 | this crate |
//! |---|---|---|
//! | count window | does not slide | ring, subtract-on-evict |
//! | closed path | locks | lock-free, no clock unless slow calls are measured |
//! | open → half-open | on a call | on a call |
//! | rejection | its own error | `Rejected(CircuitOpen)` with `retry_after` |

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod future;
mod handle;
mod layer;
mod metrics;
mod service;
mod state;
mod throttle;
mod window;

pub use future::ResponseFuture;
pub use handle::{BreakerHandle, BreakerSnapshot};
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer, SlidingWindow};
pub use service::CircuitBreaker;
pub use state::{Backoff, State};
pub use throttle::{
    AdaptiveThrottle, AdaptiveThrottleBuilder, AdaptiveThrottleLayer, ThrottleFuture,
    ThrottleHandle,
};
pub use window::Counts;
