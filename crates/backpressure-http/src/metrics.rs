//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_http_responses_total` | counter | `reason`: the rejection's kind (`rate_limited`, `overloaded`, `queue_timeout`, `circuit_open`, `deadline_exceeded`) or `error` |
//! | `backpressure_client_ip_missing_peer_total` | counter | — |
//!
//! [`PushbackLayer`](crate::PushbackLayer) publishes its own (held,
//! rejected, pushbacks, holding now, time left; see `pushback.rs`).
//!
//! `responses_total` counts the responses [`RespondLayer`](crate::RespondLayer)
//! wrote in place of an error: a 429/503/504 (or gRPC status) for a
//! rejection, the error response for anything else. Both are counted per
//! process, per core, and published by the library once a second
//! (`backpressure_core::metrics`).

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::{Arc, OnceLock};

    use backpressure_core::{
        RejectKind,
        metrics::{Counts, Publish, Published, register},
    };

    const REASONS: [&str; 6] = [
        "rate_limited",
        "overloaded",
        "queue_timeout",
        "circuit_open",
        "deadline_exceeded",
        "error",
    ];

    #[derive(Default)]
    struct Http {
        responses: Counts<6>,
        responses_published: [Published; 6],
        missing_peer: Published,
    }

    impl Publish for Http {
        fn publish(&self) {
            metrics::describe_counter!(
                "backpressure_http_responses_total",
                metrics::Unit::Count,
                "Responses the respond layer wrote in place of an error, by reason."
            );
            metrics::describe_counter!(
                "backpressure_client_ip_missing_peer_total",
                metrics::Unit::Count,
                "Requests ClientIp keyed as 0.0.0.0 because they carried no peer address."
            );
            for (i, (reason, published)) in
                REASONS.into_iter().zip(&self.responses_published).enumerate()
            {
                metrics::counter!("backpressure_http_responses_total", "reason" => reason)
                    .increment(published.since(self.responses.get(i)));
            }
            metrics::counter!("backpressure_client_ip_missing_peer_total")
                .increment(self.missing_peer.since(crate::extract::ClientIp::missing_peer_count()));
        }
    }

    fn http() -> &'static Arc<Http> {
        static HTTP: OnceLock<Arc<Http>> = OnceLock::new();
        HTTP.get_or_init(|| {
            let http = Arc::new(Http::default());
            register(&http);
            http
        })
    }

    /// Registers the counters (a layer was built: the series show from 0).
    pub(crate) fn init() {
        http();
    }

    /// A response written for a rejection of `kind`, or for an error (`None`).
    pub(crate) fn responded(kind: Option<RejectKind>) {
        let i = match kind {
            Some(RejectKind::RateLimited) => 0,
            Some(RejectKind::QueueTimeout) => 2,
            Some(RejectKind::CircuitOpen) => 3,
            Some(RejectKind::DeadlineExceeded) => 4,
            Some(_) => 1,
            None => 5,
        };
        http().responses.add(i);
    }

    /// A request without a peer address: the count itself is
    /// `ClientIp::missing_peer_count`; this makes sure it is published.
    pub(crate) fn missing_peer() {
        http();
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{init, missing_peer, responded};

#[cfg(not(feature = "metrics"))]
pub(crate) fn init() {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn responded(_kind: Option<backpressure_core::RejectKind>) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn missing_peer() {}
