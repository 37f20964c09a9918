//! A tower concurrency limit that turns "the database is slow" into "the
//! caller feels it" — without an unbounded queue anywhere.
//!
//! ```
//! use std::time::Duration;
//! use backpressure_concurrency::ConcurrencyLimitLayer;
//! use backpressure_core::{BoxError, RejectKind, Rejected};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // Two at a time, one more may wait up to 50 ms.
//! let layer = ConcurrencyLimitLayer::builder()
//!     .limit(2)
//!     .max_queue(1)
//!     .max_wait(Duration::from_millis(50))
//!     .build()?;
//! let handle = layer.handle();
//! let slow = service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, BoxError>("done")
//! });
//! let mut svc = layer.layer(slow);
//!
//! let first = tokio::spawn(svc.call(()));
//! let second = tokio::spawn(svc.call(()));
//! let third = tokio::spawn(svc.call(())); // queued
//! tokio::task::yield_now().await;
//! assert_eq!(handle.snapshot().in_flight, 2);
//! assert_eq!(handle.snapshot().queued, 1);
//!
//! // The queue is full: rejected at once, not parked.
//! let err = svc.call(()).await.unwrap_err();
//! assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::Overloaded);
//!
//! // The queued one gives up after 50 ms rather than wait a second.
//! let err = third.await?.unwrap_err();
//! assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::QueueTimeout);
//! assert_eq!(first.await??, "done");
//! # second.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **One limit per layer value.** The state is an `Arc` created by
//!   [`build`](ConcurrencyLimitBuilder::build); every service the layer
//!   builds, and every clone of them, shares it. (tower's
//!   `ConcurrencyLimitLayer` creates a semaphore per `layer()` call, so under
//!   axum — which layers per connection — nothing is limited.)
//! - **Admission in `call`.** `poll_ready` is always ready (it asks the
//!   inner service once, so that a request admitted at once can be
//!   dispatched in `call` when the inner service is ready; otherwise the
//!   inner readiness is awaited in the response future, under the permit).
//!   A request that finds a free permit (and nobody queued ahead of it) goes
//!   straight in:
//!   one compare-and-swap, no lock, no allocation, no clock read. Otherwise
//!   it joins a **bounded queue**: at most `max_queue` waiters, each for at
//!   most `max_wait` and never past its [`Deadline`](backpressure_core::Deadline).
//!   Queue full: `Rejected(Overloaded)` at once. Waited too long:
//!   `Rejected(QueueTimeout)`. Deadline passed: `Rejected(DeadlineExceeded)`.
//!   `max_queue(0)` rejects instead of queuing. The default [`Discipline`]
//!   is CoDel: FIFO while the queue drains (bursts are absorbed), and once
//!   it stands under sustained overload, nobody waits much past 5 ms behind
//!   it — newest first, stale waiters cut (`Rejected(QueueTimeout)`).
//!   [`Discipline::Fifo`] keeps every waiter's `max_wait` instead.
//! - **Hand-off, not a thundering herd.** A released permit goes to the next
//!   waiter directly (highest priority first, then by [`Discipline`]); new
//!   arrivals cannot barge past queued requests.
//! - **Nothing leaks.** The permit is held until the response future
//!   completes or is dropped; dropping a queued future frees its slot, and a
//!   permit handed to a future that is then dropped passes on.
//! - **Priorities.** With a priority extractor, each [`Priority`](backpressure_core::Priority)
//!   may hold only its share of the limit (by default `Sheddable` 50 %,
//!   `SheddablePlus` 75 %, the others 100 %), so the top of the limit stays
//!   free for important work; the queue serves higher priorities first, and
//!   a full queue evicts its least important waiter for a more important
//!   arrival. A flood of low-priority work cannot starve critical requests.
//! - **The inner service's readiness** is awaited inside the response future
//!   while holding the permit (so `S: Clone`, as axum, tonic and reqwest
//!   services are).
//!
//! # Adaptive limits
//!
//! [`ConcurrencyLimitBuilder::adaptive`] drives the limit with an
//! algorithm fed one [`Sample`] per completed request (start, RTT, in-flight
//! at start, whether the limit was saturated, and whether it was a *drop*):
//!
//! - [`Gradient2`]: for servers; tracks the latency gradient.
//! - [`Aimd`]: for clients; additive increase, multiplicative decrease on
//!   congested or slow windows.
//! - [`Vegas`]: estimates the downstream queue and keeps it small.
//!
//! What the algorithms learn from, and what they ignore — each rule is
//! there because the opposite broke a default in the real world:
//!
//! | the request… | is |
//! |---|---|
//! | succeeded (`Outcome::Success`; 4xx included) | an RTT sample |
//! | answered 429, 503, 504, gRPC 4/8/14, or an inner timeout (`Outcome::Overloaded`) | a drop: congestion |
//! | failed otherwise — a handler's 500, a reset (`Outcome::Failure`) | nothing: the breaker's business; a failure says nothing about capacity, and its latency (often instant) nothing about the backend's |
//! | was rejected by one of our own layers further in (`Outcome::Ignore`) | nothing |
//! | was cut by its deadline (the timeout above dropped it inside [`Deadline::expired_scope`](backpressure_core::Deadline::expired_scope)) after more than twice the unloaded RTT under its permit | a drop |
//! | was cut by its deadline after an ordinary time under its permit (the deadline went on queueing before it) | nothing |
//! | was dropped because its client went away | nothing, unless [`cancel_is_drop(true)`](ConcurrencyLimitBuilder::cancel_is_drop) |
//!
//! Samples are grouped into windows ([`WindowConfig`]). A window backs the
//! limit off only when at least
//! [`drop_threshold`](Gradient2::drop_threshold) of its samples (5 %), and
//! two or more, were drops: reacting to a single drop let a 1 % background
//! of timeouts pin the limit to its floor at any traffic volume. None of the
//! algorithms grows the limit while the service is app-limited (fewer than
//! half the permits in use); all three **slow-start**: while requests wait
//! for permits and the latency is flat, the limit doubles each window, up to
//! half the limit where latency last rose, so an endpoint that is slow but
//! not a bottleneck (200 ms, 2,000 requests/s: 400 permits) gets its
//! permits in about a second. Gradient2 and Vegas compare against an
//! *unloaded* RTT that they re-measure every few seconds by halving the limit
//! for one window — skipped while the RTT already equals a verified
//! baseline: without that, a delay-based limiter cannot tell a slower
//! backend from its own queueing, and either climbs without bound or shrinks
//! forever.
//!
//! **Sampling at high rates.** Measuring a request costs two clock reads
//! and the algorithm's lock: most of an adaptive limit's cost per request
//! (197 ns measuring every request against 34 ns for a fixed limit on the
//! machine of BENCHMARKS.md, `cargo bench -p backpressure-benches --bench
//! layers -- concurrency/`), and the lock is what every core meets. A
//! window needs hundreds of samples, not tens of thousands, so above about
//! 20,000 completed requests a second the limiter
//! measures one request in `k` (a power of two up to
//! [`max_sample_every`](ConcurrencyLimitBuilder::max_sample_every), 64 by
//! default), chosen so that about 10,000 a second are measured: the
//! adaptive limit then costs 45 ns per request, against the fixed one's
//! 34. Which requests are measured is decided per core by count, before
//! the request runs, so drop rates, RTTs and in-flight counts are estimated
//! without bias; the rate is
//! re-read every 100 ms of samples, and when it falls the next measured
//! request (within `k` requests per core) restores every-request
//! measurement. [`ConcurrencyLimitSnapshot::sample_every`] shows `k`.
//!
//! # Observability
//!
//! [`ConcurrencyLimitLayer::handle`] gives a [`ConcurrencyLimitHandle`] with
//! [`snapshot`](ConcurrencyLimitHandle::snapshot) (limit, in-flight, queue,
//! rejections, queue waits) and [`pressure`](ConcurrencyLimitHandle::pressure)
//! for a load shedder. Limit changes and rejections are `tracing` events
//! (`debug` and `trace`). With the `metrics` feature:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_concurrency_requests_total` | counter | `name` |
//! | `backpressure_concurrency_admitted_total` | counter | `name` |
//! | `backpressure_concurrency_rejected_total` | counter | `name`, `reason` |
//! | `backpressure_concurrency_in_flight` | gauge | `name` |
//! | `backpressure_concurrency_queued` | gauge | `name` |
//! | `backpressure_concurrency_limit` | gauge | `name` |
//! | `backpressure_concurrency_queue_wait_seconds` | histogram | `name` |
//!
//! Requests and admissions are counted per core; the library publishes the
//! counters and gauges once a second (`backpressure::metrics::flush` at
//! once), so no request touches the recorder.
//!
//! # Differences from `tower::limit::ConcurrencyLimit`
//!
//! | | tower | this crate |
//! |---|---|---|
//! | state | per `layer()` call | shared by every service from the layer |
//! | waiting | in `poll_ready`, unbounded in time and number | in the future, bounded by `max_queue`, `max_wait`, the deadline |
//! | overload | callers park | `Rejected(Overloaded / QueueTimeout / DeadlineExceeded)` |
//! | fast path | semaphore acquire future | one CAS |
//! | limit | fixed | fixed or adaptive |
//! | priorities | none | shares of the limit, priority-ordered queue |

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
mod counter;
mod future;
mod handle;
mod hold;
mod layer;
mod metrics;
mod permit;
mod queue;
mod service;
mod shared;

pub use algorithm::{Aimd, Gradient2, LimitAlgorithm, Sample, Summary, Vegas, WindowConfig};
pub use future::ResponseFuture;
pub use handle::{ConcurrencyLimitHandle, ConcurrencyLimitSnapshot};
pub use hold::{HeldPermit, OnResponse, Release};
#[cfg(feature = "http")]
pub use hold::{HoldUntilBodyEnd, PermitBody};
pub use layer::{ConcurrencyLimitBuilder, ConcurrencyLimitLayer, DEFAULT_SHARES};
pub use queue::Discipline;
pub use service::ConcurrencyLimit;
