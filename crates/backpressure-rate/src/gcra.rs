//! The generic cell rate algorithm, as pure arithmetic on nanoseconds.
//!
//! One number per bucket, the *theoretical arrival time* (TAT): when the
//! bucket would be empty again if nothing else arrived. A request of cost
//! `c` at time `t` conforms iff `max(tat, t) + c·T − t ≤ B·T`, where `T` is
//! the emission interval and `B` the burst; conforming moves the TAT to
//! `max(tat, t) + c·T`. There are no windows, so no double burst at a window
//! edge (tower's `RateLimit` is a fixed window: tower#842).

use crate::Quota;

/// A quota in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval `T`.
    t: u64,
    /// `B·T`: how far ahead of `now` the TAT may run.
    tolerance: u64,
    burst: u32,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The new TAT to store, if the request conforms (now or after `wait`).
    pub(crate) new_tat: Option<u64>,
    /// For a conforming request: how long it must wait (zero: go now). For a
    /// rejected one: how long until it would conform.
    pub(crate) wait: u64,
    /// How far the bucket's TAT is ahead of now after this decision: the
    /// time until it is full again.
    pub(crate) ahead: u64,
    /// The cost exceeds the burst: it can never conform.
    pub(crate) impossible: bool,
}

impl Gcra {
    /// `None` if the quota is invalid (validated at build time).
    pub(crate) fn new(quota: &Quota) -> Option<Self> {
        let t = u64::try_from(quota.emission_interval()?.as_nanos()).ok()?;
        let burst = quota.burst_size();
        Some(Gcra { t, tolerance: t.checked_mul(u64::from(burst))?, burst })
    }

    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    /// Decides a request of `cost` arriving at `now` on a bucket whose TAT is
    /// `tat`, allowing it to wait up to `max_wait` nanoseconds for its turn.
    pub(crate) fn check(&self, tat: u64, now: u64, cost: u32, max_wait: u64) -> Verdict {
        let base = tat.max(now);
        if cost > self.burst {
            return Verdict { new_tat: None, wait: 0, ahead: base - now, impossible: true };
        }
        let increment = self.t * u64::from(cost);
        let new_tat = base + increment;
        let ahead = new_tat - now;
        if ahead <= self.tolerance {
            return Verdict { new_tat: Some(new_tat), wait: 0, ahead, impossible: false };
        }
        let wait = ahead - self.tolerance;
        if wait <= max_wait {
            // Reserve the slot now; the request goes at `now + wait`.
            return Verdict { new_tat: Some(new_tat), wait, ahead, impossible: false };
        }
        Verdict { new_tat: None, wait, ahead: base - now, impossible: false }
    }

    /// Units spendable at once when the TAT is `ahead` of now.
    #[cfg(test)]
    fn remaining(&self, ahead: u64) -> u32 {
        let room = self.tolerance.saturating_sub(ahead);
        u32::try_from(room / self.t).unwrap_or(u32::MAX).min(self.burst)
    }

    pub(crate) fn interval(&self) -> u64 {
        self.t
    }

    pub(crate) fn tolerance(&self) -> u64 {
        self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gcra(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(&Quota::per_second(per_second).burst(burst)).unwrap()
    }

    #[test]
    fn a_full_burst_then_the_steady_rate() {
        let g = gcra(10, 3); // T = 100 ms
        let mut tat = 0;
        for _ in 0..3 {
            let v = g.check(tat, 0, 1, 0);
            tat = v.new_tat.expect("burst");
        }
        let v = g.check(tat, 0, 1, 0);
        assert_eq!(v.new_tat, None);
        assert_eq!(v.wait, 100_000_000, "the next slot frees in exactly T");
        // At exactly T it conforms; a nanosecond earlier it does not.
        assert!(g.check(tat, 100_000_000 - 1, 1, 0).new_tat.is_none());
        assert!(g.check(tat, 100_000_000, 1, 0).new_tat.is_some());
    }

    #[test]
    fn weighted_requests_and_impossible_costs() {
        let g = gcra(10, 5);
        let v = g.check(0, 0, 5, 0);
        assert_eq!(g.remaining(v.ahead), 0);
        let v = g.check(v.new_tat.unwrap(), 0, 2, 0);
        assert_eq!(v.wait, 200_000_000, "two units need 2·T");
        let v = g.check(0, 0, 6, 0);
        assert!(v.impossible && v.new_tat.is_none());
    }

    #[test]
    fn bounded_wait_reserves_the_slot() {
        let g = gcra(10, 1);
        let tat = g.check(0, 0, 1, 0).new_tat.unwrap();
        let v = g.check(tat, 0, 1, 100_000_000);
        assert_eq!((v.new_tat, v.wait), (Some(200_000_000), 100_000_000));
        let v = g.check(200_000_000, 0, 1, 100_000_000);
        assert_eq!(v.new_tat, None, "a second waiter would wait 200 ms > max_wait");
    }

    proptest! {
        /// Over any arrivals, admitted cost ≤ burst + rate × elapsed, and a
        /// request that conforms by the formula is never rejected.
        #[test]
        fn admitted_never_exceeds_burst_plus_rate(
            per_second in 1u32..1000,
            burst in 1u32..50,
            arrivals in proptest::collection::vec((0u64..50_000_000, 1u32..5), 1..300),
        ) {
            let g = gcra(per_second, burst);
            let t_ns = 1_000_000_000u64 / u64::from(per_second);
            let (mut tat, mut now, mut admitted) = (0u64, 0u64, 0u64);
            for (gap, cost) in arrivals {
                now += gap;
                let v = g.check(tat, now, cost, 0);
                let conforms = cost <= burst && tat.max(now) + t_ns * u64::from(cost) - now <= t_ns * u64::from(burst);
                prop_assert_eq!(v.new_tat.is_some(), conforms);
                if let Some(new_tat) = v.new_tat {
                    tat = new_tat;
                    admitted += u64::from(cost);
                }
                // burst + rate × elapsed, in units.
                let allowed = u64::from(burst) + now / t_ns;
                prop_assert!(admitted <= allowed, "admitted {} > {}", admitted, allowed);
            }
        }

        /// Waiting exactly `wait` then retrying conforms; a nanosecond less does not.
        #[test]
        fn retry_after_is_exact(
            per_second in 1u32..1000,
            burst in 1u32..20,
            cost in 1u32..20,
            tat_ahead in 0u64..5_000_000_000,
        ) {
            prop_assume!(cost <= burst);
            let g = gcra(per_second, burst);
            let now = 1_000_000_000_000u64;
            let tat = now + tat_ahead;
            let v = g.check(tat, now, cost, 0);
            if v.new_tat.is_none() {
                prop_assert!(v.wait > 0);
                prop_assert!(g.check(tat, now + v.wait, cost, 0).new_tat.is_some());
                prop_assert!(g.check(tat, now + v.wait - 1, cost, 0).new_tat.is_none());
            }
        }
    }
}
