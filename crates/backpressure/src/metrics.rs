//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): every series the layers publish, with its HELP text and
//! unit, and [`flush`].
//!
//! # How they are kept
//!
//! A layer counts in its own state — per core for what every request
//! counts, so a request touches no cache line another core writes and no
//! recorder — and registers that state with the library when it is built.
//! Once a second, a thread of the library's (one per process, named
//! `backpressure-metrics`, started with the first layer) publishes every
//! live layer's counters and gauges to the installed recorder, with their
//! descriptions; so does [`flush`], and so does a layer's state when the
//! last service using it is dropped. Hence:
//!
//! - a request allocates nothing and resolves no handle for its metrics;
//! - the recorder may be installed before or after the layers are built;
//! - what a scrape shows is at most a second old (call [`flush`] first for
//!   exact figures, as the tests do);
//! - gauges (`in_flight`, `queued`, `limit`, the breaker's state, Redis
//!   `up`) are kept by the library: nothing to poll yourself.
//!
//! Every layer's series carry a `name` label: the layer's `.name(..)`, its
//! kind by default (`concurrency-limit`, `rate-limit`, ...); the server
//! preset names its layers `server`, the client preset `client`. Two layers
//! under one name add up in the counters.
//!
//! # The series
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_concurrency_requests_total` | counter | `name` |
//! | `backpressure_concurrency_admitted_total` | counter | `name` |
//! | `backpressure_concurrency_rejected_total` | counter | `name`, `reason` (`overloaded`, `queue_timeout`, `deadline_exceeded`) |
//! | `backpressure_concurrency_in_flight` | gauge | `name` |
//! | `backpressure_concurrency_queued` | gauge | `name` |
//! | `backpressure_concurrency_limit` | gauge | `name` |
//! | `backpressure_concurrency_queue_wait_seconds` | histogram | `name` |
//! | `backpressure_rate_requests_total` | counter | `name` |
//! | `backpressure_rate_admitted_total` | counter | `name` |
//! | `backpressure_rate_rejected_total` | counter | `name`, `reason` (`rate_limited`) |
//! | `backpressure_rate_delayed_total` | counter | `name` |
//! | `backpressure_rate_shadow_rejected_total` | counter | `name` |
//! | `backpressure_shed_requests_total` | counter | `name`, `priority` |
//! | `backpressure_shed_admitted_total` | counter | `name`, `priority` |
//! | `backpressure_shed_rejected_total` | counter | `name`, `priority` |
//! | `backpressure_shed_in_flight` | gauge (with `in_flight_limit`) | `name` |
//! | `backpressure_breaker_requests_total` | counter | `name` |
//! | `backpressure_breaker_admitted_total` | counter | `name` |
//! | `backpressure_breaker_rejected_total` | counter | `name`, `reason` (`circuit_open`) |
//! | `backpressure_breaker_calls_total` | counter | `name`, `outcome` (`success`, `failure`, `ignored`, `cancelled`) |
//! | `backpressure_breaker_opened_total` | counter | `name` |
//! | `backpressure_breaker_shadow_tripped_total` | counter | `name` |
//! | `backpressure_breaker_state` | gauge (1 for the current state) | `name`, `state` |
//! | `backpressure_throttle_requests_total` | counter | `name` |
//! | `backpressure_throttle_rejected_total` | counter | `name`, `reason` (`throttled`) |
//! | `backpressure_throttle_probability` | gauge | `name` |
//! | `backpressure_timeout_expired_total` | counter | `name` (`timeout`) |
//! | `backpressure_retry_attempts_total` | counter | `name` |
//! | `backpressure_retry_retries_total` | counter | `name` |
//! | `backpressure_retry_denied_total` | counter | `name`, `reason` (`budget`, `deadline`, `pushback`) |
//! | `backpressure_http_responses_total` | counter (feature `http`) | `reason` (a rejection's kind, or `error`) |
//! | `backpressure_client_ip_missing_peer_total` | counter (feature `http`) | — |
//! | `backpressure_pushback_held_total` | counter (feature `http`) | `name` |
//! | `backpressure_pushback_rejected_total` | counter (feature `http`) | `name` |
//! | `backpressure_pushback_pushbacks_total` | counter (feature `http`) | `name` |
//! | `backpressure_pushback_holding` | gauge (feature `http`) | `name` |
//! | `backpressure_pushback_remaining_seconds` | gauge (feature `http`) | `name` |
//! | `backpressure_redis_up` | gauge (feature `redis`) | `name` |
//! | `backpressure_redis_round_trips_total` | counter (feature `redis`) | `name` |
//! | `backpressure_redis_errors_total` | counter (feature `redis`) | `name` |
//! | `backpressure_redis_fallback_total` | counter (feature `redis`) | `name` |
//! | `backpressure_redis_prechecked_total` | counter (feature `redis`) | `name` |
//!
//! A rejection ratio is `rejected_total / requests_total` per layer. A
//! Grafana dashboard and Prometheus alert rules over these names are in the
//! repository's `examples/monitoring/`; a test checks their queries
//! against an exporter's output.
//!
//! # Example
//!
//! ```
//! use backpressure::concurrency::ConcurrencyLimitLayer;
//!
//! // Install a recorder (here the Prometheus exporter's), build the
//! // layers, serve; `handle.render()` is the `/metrics` body.
//! # fn recorder() {}
//! let layer = ConcurrencyLimitLayer::builder().limit(64).name("db").build()?;
//! // ... requests ...
//! backpressure::metrics::flush(); // publish now, not within the second
//! # let _ = layer;
//! # Ok::<(), backpressure::core::ConfigError>(())
//! ```

pub use backpressure_core::metrics::{INTERVAL, flush};
