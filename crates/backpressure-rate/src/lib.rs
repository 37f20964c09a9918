//! GCRA rate limiting for tower: one bucket or one per key, shared by every
//! service a layer builds, with bounded memory and an exact `Retry-After`.
//!
//! ```
//! use std::time::Duration;
//! use backpressure_core::{BoxError, RejectKind, Rejected};
//! use backpressure_rate::{Quota, RateLimitLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // 10 per second, bursts of 2.
//! let layer = RateLimitLayer::new(Quota::per_second(10).burst(2))?;
//! let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//!
//! svc.clone().oneshot(1).await?;
//! svc.clone().oneshot(2).await?;
//! let err = svc.clone().oneshot(3).await.unwrap_err();
//! let rejected = Rejected::find(&err).unwrap();
//! assert_eq!(rejected.kind(), RejectKind::RateLimited);
//! // Exact: one emission interval (100 ms) until the next unit frees.
//! assert_eq!(rejected.retry_after(), Some(Duration::from_millis(100)));
//!
//! tokio::time::advance(Duration::from_millis(100)).await;
//! assert_eq!(svc.oneshot(4).await?, 4);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **GCRA**: one theoretical arrival time per bucket, updated with a
//!   compare-and-swap. No windows, so no double burst at a window edge
//!   (tower's `RateLimit` is a fixed window: tower#842). A request of cost
//!   `c` conforms when the bucket has `c` units; [`Quota`] says how many
//!   per period and the burst.
//! - **Decided in `call`**, where the key and cost are visible; `poll_ready`
//!   is the inner service's. A rejection is `Rejected(RateLimited)` with
//!   an exact `retry_after` (waiting exactly that long conforms, a
//!   nanosecond less does not) and a [`RateLimitInfo`](backpressure_core::RateLimitInfo)
//!   for the `RateLimit` headers.
//! - **Shared**: the layer is `Clone`, and every service built from it —
//!   and every clone of those — uses the same buckets (tower's `RateLimit`
//!   is per service and not `Clone`: tower#794, axum#2634).
//! - **Bounded wait**: with [`max_wait`](RateLimitBuilder::max_wait), a
//!   request that would conform within that time waits for its reserved slot
//!   instead of failing — never past its deadline
//!   ([`Deadline::current`](backpressure_core::Deadline::current)). A
//!   waiting request dropped early does not give its slot back (the limit
//!   errs on the safe side).
//! - **Keyed, in bounded memory**: see [`KeyedStore`]. A hard cap on keys
//!   holds under a key-spray attack; cleaning is automatic and incremental.
//! - **Shadow mode**: counts would-be rejections and lets them through.
//! - **Pluggable store**: [`RateStore`] — the Redis store implements it.
//! - **Time** is tokio's, so paused-time tests drive the limiter; the
//!   `fast-clock` feature adds [`RateLimitBuilder::fast_clock`], which reads
//!   the CPU's timestamp counter instead (a few nanoseconds instead of a
//!   `clock_gettime`), at the price of not following a paused tokio clock.
//!   A direct limiter with a burst of at least 32 per core reads no clock
//!   at all for most checks: they are served from the core's reserve (see
//!   [`DirectStore`]).
//!
//! # Differences from `tower::limit::RateLimit` and `governor`
//!
//! | | tower | governor / tower_governor | this crate |
//! |---|---|---|---|
//! | algorithm | fixed window | GCRA | GCRA |
//! | shared across clones / `layer()` calls | no | yes | yes |
//! | `per_second(100)` | — | tower_governor: one per 100 s | 100 per second |
//! | keyed memory | — | grows until `retain_recent` (governor#171) | capped, automatic |
//! | `Retry-After` | — | yes | exact, plus `RateLimit` header info |
//! | over limit | parks in `poll_ready` | error | `Rejected(RateLimited)`, or a bounded wait |

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod future;
mod gcra;
mod handle;
mod layer;
mod metrics;
mod quota;
mod service;
mod store;

pub use future::ResponseFuture;
pub use handle::{RateLimitHandle, RateLimitSnapshot};
pub use layer::{
    Custom, Direct, Global, Keyed, RateLimitBuilder, RateLimitLayer, StoreSpec, UnitCost,
};
pub use quota::Quota;
pub use service::RateLimit;
pub use store::{Check, Decision, DirectStore, KeyedStore, RateStore, Verdict};
