//! A global rate limit shared by every replica, on Redis: a
//! [`RateStore`](backpressure_rate::RateStore) for
//! [`RateLimitLayer`](backpressure_rate::RateLimitLayer).
//!
//! When a service runs as N replicas behind a load balancer, a per-instance
//! limit lets N× the intended rate through. This store keeps the buckets in
//! the Redis the service already runs.
//!
//! ```no_run
//! use std::time::Duration;
//! use backpressure_rate::{Quota, RateLimitLayer};
//! use backpressure_redis::{FailureMode, RedisStore};
//!
//! # async fn demo() -> Result<(), backpressure_core::BoxError> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379/", Quota::per_second(100))
//!     .prefix("api")
//!     .timeout(Duration::from_millis(20))
//!     .failure_mode(FailureMode::Local { replicas: 4 })
//!     .connect()
//!     .await?;
//! let layer = RateLimitLayer::with_store(store).keyed(|tenant: &u64| *tenant).build()?;
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! On a Redis Cluster, name one or more of its nodes and build the same way:
//! `RedisStore::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"], quota)`.
//!
//! # Behaviour
//!
//! - **One round trip**: GCRA in one Lua script (`src/gcra.lua`), run with
//!   `EVALSHA` and re-loaded transparently after `NOSCRIPT` (a restarted
//!   Redis, or `SCRIPT FLUSH`). The clock is Redis's `TIME`, never the
//!   replicas'. Decisions, `retry_after`, header information and weighted
//!   requests are the in-memory store's (`tests/redis.rs` checks them on the
//!   same arrival sequence), in microseconds.
//! - **Memory tracks active keys**: each key expires when its bucket has
//!   refilled.
//! - **Redis Cluster**: [`RedisStore::cluster`] takes one or more nodes and
//!   uses the `redis` crate's cluster client. Keys are `{prefix}:{<key>}` —
//!   the key is a hash tag, so each bucket lives on one slot and a check is
//!   one round trip to that slot's master. Braces inside a key are escaped
//!   (`%7B`, `%7D`), and `%` too (`%25`), so that two keys never share a
//!   bucket. When a master dies, checks on its slots get the failure mode
//!   until its replica takes over, then Redis decides again: 1.9 s on the
//!   test cluster (3 masters, 3 replicas, `cluster-node-timeout` 500 ms,
//!   `tests/redis.rs`); the other masters' keys are not affected.
//! - **Bounded**: every check is bounded by `timeout` (default 25 ms). When
//!   Redis is slow or down, the [`FailureMode`] applies within that time:
//!   fail open, fail closed (`Rejected(RateLimited)`), or — the default — a
//!   local limiter at `limit / replicas`. After `breaker_threshold`
//!   consecutive failures (default 3) the store stops paying the timeout and
//!   uses the failure mode directly, sending one probe to Redis every
//!   `breaker_cooldown` (default 1 s); recovery is automatic, and a probe
//!   whose check is dropped unfinished (its client left) is given back at
//!   once. Outage and recovery are logged once each (`warn`, `info`), not
//!   per request. A Redis that hangs (SIGSTOP) is bounded the same way: in
//!   `tests/redis.rs` the slowest check took 51.9 ms with a 50 ms timeout,
//!   and the store used Redis again 137 ms after SIGCONT (cooldown 200 ms).
//! - **Down from the first second**: [`connect`](RedisStoreBuilder::connect)
//!   returns a store even when Redis does not answer; it applies the failure
//!   mode (and says so) until its first probe connects.
//! - **Local pre-check** (optional): a key Redis said is over its limit until
//!   T is rejected locally, without a round trip, until T. Sharded (no lock
//!   shared by every check) and bounded: once full, a new denial pushes an
//!   older one out in O(1); `RedisStats::precheck_keys` counts what it holds.
//! - Built on the `redis` crate's [`ConnectionManager`](redis::aio::ConnectionManager)
//!   (one instance) or cluster client, which reconnect by themselves; both
//!   multiplex, so many checks in flight share one connection, pipelined.
//!
//! # Metrics (feature `metrics`)
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_redis_round_trips_total` | counter | `name` |
//! | `backpressure_redis_errors_total` | counter | `name` |
//! | `backpressure_redis_fallback_total` | counter | `name` |
//! | `backpressure_redis_prechecked_total` | counter | `name` |
//! | `backpressure_redis_up` | gauge (1 up, 0 in outage) | `name` |
//!
//! Counted in the store and published by the library once a second (the
//! same figures as [`RedisStore::stats`]).

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod key;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use key::RedisKey;
pub use store::{FailureMode, RedisStats, RedisStore, RedisStoreBuilder};
