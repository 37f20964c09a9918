//! The retry budget: retries may add at most a fixed fraction to the
//! traffic, plus a small floor per second so a quiet client can still retry.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use backpressure_core::ConfigError;
use tokio::time::Instant;

/// Fixed-point units per retry token.
const UNIT: u64 = 1_000_000;

/// A shared, lock-free retry budget (SRE book ch. 22; Finagle's and Envoy's
/// retry budgets): each request deposits `ratio` of a token, each retry
/// withdraws a whole one, and `min_per_sec` tokens per second are added
/// regardless, so that a client sending one request a minute may still
/// retry it.
///
/// Over any run, retries ≤ `initial + ratio × requests + min_per_sec ×
/// elapsed seconds` — the bound the tests check, and why a failing upstream
/// sees at most `(1 + ratio)` times the traffic plus the floor, where a
/// naive three-attempt retry triples it. At most `max_saved` tokens are
/// kept, so a long healthy period cannot bank a retry storm.
///
/// Clones share the same balance: give one budget to every client of an
/// upstream.
///
/// ```
/// use backpressure_retry::RetryBudget;
///
/// let budget = RetryBudget::builder().ratio(0.2).min_per_sec(5.0).build()?;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Units deposited per request.
    deposit: u64,
    /// Units added per millisecond (the floor).
    per_ms: u64,
    /// Most units kept.
    cap: u64,
    balance: AtomicU64,
    /// Milliseconds since `base` up to which the floor has been paid.
    refilled_ms: AtomicU64,
    base: OnceLock<Instant>,
    deposits: AtomicU64,
    withdrawn: AtomicU64,
    denied: AtomicU64,
}

impl RetryBudget {
    /// The default budget: retries ≤ 10 % of requests (the SRE book's
    /// figure; Envoy and Finagle use 20 %) plus 1 per second, at most 20
    /// banked.
    pub fn new() -> Self {
        RetryBudget::builder().build().expect("the defaults are valid")
    }

    /// A budget to configure.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder { ratio: 0.1, min_per_sec: 1.0, max_saved: 20 }
    }

    /// Records one original request (not a retry): deposits `ratio` of a
    /// token. One CAS, no clock read.
    #[inline]
    pub fn deposit(&self) {
        let i = &*self.inner;
        i.deposits.fetch_add(1, Relaxed);
        if i.deposit == 0 {
            return;
        }
        let _ = i
            .balance
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_add(i.deposit).min(i.cap)));
    }

    /// Takes one retry token if there is one. Reads the clock to pay the
    /// floor.
    pub fn withdraw(&self) -> bool {
        let base = *self.inner.base.get_or_init(Instant::now);
        let now_ms = u64::try_from(Instant::now().saturating_duration_since(base).as_millis())
            .unwrap_or(u64::MAX);
        self.withdraw_at(now_ms)
    }

    /// [`withdraw`](Self::withdraw) at a given time (milliseconds since the
    /// budget's first withdrawal attempt): the pure rule, for tests.
    pub(crate) fn withdraw_at(&self, now_ms: u64) -> bool {
        let i = &*self.inner;
        let paid = i.refilled_ms.fetch_max(now_ms, Relaxed);
        let elapsed = now_ms.saturating_sub(paid);
        if elapsed > 0 && i.per_ms > 0 {
            let add = elapsed.saturating_mul(i.per_ms);
            let _ = i
                .balance
                .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_add(add).min(i.cap)));
        }
        let took = i.balance.fetch_update(Relaxed, Relaxed, |b| b.checked_sub(UNIT)).is_ok();
        if took {
            i.withdrawn.fetch_add(1, Relaxed);
        } else {
            i.denied.fetch_add(1, Relaxed);
        }
        took
    }

    /// Counters and the current balance.
    pub fn snapshot(&self) -> RetryBudgetSnapshot {
        let i = &*self.inner;
        RetryBudgetSnapshot {
            requests: i.deposits.load(Relaxed),
            retries: i.withdrawn.load(Relaxed),
            denied: i.denied.load(Relaxed),
            balance: i.balance.load(Relaxed) as f64 / UNIT as f64,
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

/// A [`RetryBudget`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryBudgetSnapshot {
    /// Original requests recorded.
    pub requests: u64,
    /// Retries the budget allowed.
    pub retries: u64,
    /// Retries the budget denied.
    pub denied: u64,
    /// Retry tokens available now (before the floor owed since the last
    /// withdrawal).
    pub balance: f64,
}

/// Builds a [`RetryBudget`].
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_sec: f64,
    max_saved: u32,
}

impl RetryBudgetBuilder {
    /// Retries allowed per original request, in `[0, 10]`. Default 0.1.
    #[must_use]
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic, in `[0, 1e6]`.
    /// Default 1. The budget starts with one second of it.
    #[must_use]
    pub fn min_per_sec(mut self, min_per_sec: f64) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Most retry tokens banked, at least 1. Default 20.
    #[must_use]
    pub fn max_saved(mut self, max_saved: u32) -> Self {
        self.max_saved = max_saved;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(self.ratio.is_finite() && (0.0..=10.0).contains(&self.ratio)) {
            return Err(ConfigError::new(
                "retry budget",
                "ratio",
                format!("must be in [0, 10], got {}", self.ratio),
            ));
        }
        if !(self.min_per_sec.is_finite() && (0.0..=1e6).contains(&self.min_per_sec)) {
            return Err(ConfigError::new(
                "retry budget",
                "min_per_sec",
                format!("must be in [0, 1e6], got {}", self.min_per_sec),
            ));
        }
        if self.max_saved == 0 {
            return Err(ConfigError::new("retry budget", "max_saved", "must be at least 1"));
        }
        let cap = u64::from(self.max_saved) * UNIT;
        // Floor per millisecond, in units: min_per_sec × UNIT / 1000.
        let per_ms = (self.min_per_sec * (UNIT as f64 / 1000.0)).round() as u64;
        let initial = ((self.min_per_sec * UNIT as f64) as u64).min(cap);
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                deposit: (self.ratio * UNIT as f64).round() as u64,
                per_ms,
                cap,
                balance: AtomicU64::new(initial),
                refilled_ms: AtomicU64::new(0),
                base: OnceLock::new(),
                deposits: AtomicU64::new(0),
                withdrawn: AtomicU64::new(0),
                denied: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_fields_are_named() {
        let e = RetryBudget::builder().ratio(-0.1).build().unwrap_err();
        assert_eq!(e.field(), "ratio");
        let e = RetryBudget::builder().min_per_sec(f64::NAN).build().unwrap_err();
        assert_eq!(e.field(), "min_per_sec");
        let e = RetryBudget::builder().max_saved(0).build().unwrap_err();
        assert_eq!(e.field(), "max_saved");
    }

    #[test]
    fn ten_percent_of_a_failing_stream() {
        let b = RetryBudget::builder().ratio(0.1).min_per_sec(0.0).build().unwrap();
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw_at(0) {
                retries += 1;
            }
        }
        assert_eq!(retries, 100);
        assert_eq!(b.snapshot().denied, 900);
    }

    #[test]
    fn the_floor_refills_with_time_and_the_cap_holds() {
        let b = RetryBudget::builder().ratio(0.0).min_per_sec(2.0).max_saved(3).build().unwrap();
        // One second of floor to start with.
        assert!(b.withdraw_at(0));
        assert!(b.withdraw_at(0));
        assert!(!b.withdraw_at(0));
        // 500 ms later: one more.
        assert!(b.withdraw_at(500));
        assert!(!b.withdraw_at(500));
        // A long quiet period banks at most max_saved.
        let taken = (0..10).filter(|_| b.withdraw_at(100_000)).count();
        assert_eq!(taken, 3);
    }

    proptest! {
        /// Whatever the interleaving of requests, retries and time, retries
        /// never exceed initial + ratio × requests + floor × elapsed.
        #[test]
        fn retries_never_exceed_the_budget(
            ratio in 0.0f64..1.0,
            floor in 0.0f64..20.0,
            ops in proptest::collection::vec((0u8..3, 0u64..300), 1..400),
        ) {
            let b = RetryBudget::builder().ratio(ratio).min_per_sec(floor).max_saved(50).build().unwrap();
            let (mut now, mut requests, mut retries) = (0u64, 0u64, 0u64);
            for (op, dt) in ops {
                match op {
                    0 => { b.deposit(); requests += 1; }
                    1 => { if b.withdraw_at(now) { retries += 1; } }
                    _ => now += dt,
                }
            }
            let bound = floor + ratio * requests as f64 + floor * now as f64 / 1000.0;
            // One token of slack for fixed-point rounding of the deposits.
            prop_assert!(retries as f64 <= bound + 1e-6 * requests as f64 + 1e-3 * (now as f64) + 1e-9,
                "{retries} retries > bound {bound}");
        }
    }
}
