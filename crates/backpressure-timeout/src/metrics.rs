//! The timeouts' one counter: see the crate's features.

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    };

    use backpressure_core::metrics::{Publish, Published, register};

    #[derive(Default)]
    struct Expired {
        total: AtomicU64,
        published: Published,
    }

    impl Publish for Expired {
        fn publish(&self) {
            metrics::describe_counter!(
                "backpressure_timeout_expired_total",
                metrics::Unit::Count,
                "Requests failed by a timeout (their deadline passed)."
            );
            metrics::counter!("backpressure_timeout_expired_total", "name" => "timeout")
                .increment(self.published.since(self.total.load(Relaxed)));
        }
    }

    /// Registered at the first timeout, kept for the process.
    fn expired_counter() -> &'static Arc<Expired> {
        static EXPIRED: OnceLock<Arc<Expired>> = OnceLock::new();
        EXPIRED.get_or_init(|| {
            let expired = Arc::new(Expired::default());
            register(&expired);
            expired
        })
    }

    /// Registers the counter (a layer was built: the series shows from 0).
    pub(crate) fn init() {
        expired_counter();
    }

    pub(crate) fn expired() {
        expired_counter().total.fetch_add(1, Relaxed);
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{expired, init};

#[cfg(not(feature = "metrics"))]
pub(crate) fn expired() {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn init() {}
