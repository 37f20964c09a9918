use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

use backpressure_core::instant_after;
use tokio::time::Instant;

use super::{Sample, WindowSummary};

/// Tracks the unloaded RTT ("baseline") that delay-based algorithms compare
/// against, and re-measures it periodically.
///
/// From RTTs alone a limiter cannot tell "the backend got slower" from "I am
/// making it queue": a baseline that follows sustained queueing (Netflix's
/// long-RTT average) lets the limit climb without bound, and one that only
/// ever takes the minimum shrinks the limit forever after a real latency
/// shift. So right after the first window, then every `interval` (±10 %
/// jitter, so replicas do not probe in step), the algorithm halves its limit
/// for one window, and the RTT measured there becomes the baseline — as
/// BBR's ProbeRTT does. A scheduled probe is skipped while the RTT is within
/// 10 % of a baseline an earlier probe verified: nothing is queueing, and
/// halving the limit would only cost throughput. While each halving still cuts the RTT by more than a
/// quarter, the requests were queueing downstream, so it halves again: a
/// limiter started ten times above capacity finds the unloaded RTT in a few
/// windows instead of never.
///
/// A real latency shift (the backend became 3x slower: a failover, a GC
/// storm) must not wait for the next scheduled probe: the gradient would
/// meanwhile cut the limit to its minimum and goodput with it (measured in
/// the overload lab: 2 queries/s where 660/s were possible). So after
/// [`INFLATED_WINDOWS`] windows in a row with the RTT over 1.5x the
/// baseline, a probe starts at once (at most one per fifth of the
/// interval). If it finds the RTT no lower at half the limit, the rise was
/// not our queueing: the baseline moves up, and the limit goes back to
/// where it was before the RTT rose.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    interval: Duration,
    baseline: Option<Duration>,
    next_probe: Option<Instant>,
    probing: Option<Probing>,
    rng: u64,
    /// Consecutive windows with the RTT over 1.5x the baseline, and the
    /// limit before the first of them.
    inflated: u32,
    limit_before: f64,
    last_probe_end: Option<Instant>,
    /// A probe has measured the baseline at least once.
    verified: bool,
}

/// Windows of inflated RTT before an early probe.
const INFLATED_WINDOWS: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct Probing {
    saved_limit: f64,
    probe_limit: usize,
    previous_rtt: Option<Duration>,
    /// Started early because the RTT rose: `Some(limit before the rise,
    /// baseline then)`.
    early: Option<(f64, Option<Duration>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// Apply the algorithm's own rule.
    Normal,
    /// A probe starts: use this limit for one window.
    Start(usize),
    /// The probe ended: go back to this limit.
    Restore(f64),
}

impl Probe {
    pub(crate) fn new(interval: Duration) -> Self {
        let rng = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Self::with_seed(interval, rng)
    }

    /// A probe whose jitter is reproducible (xorshift needs a non-zero state).
    pub(crate) fn with_seed(interval: Duration, seed: u64) -> Self {
        Probe {
            interval,
            baseline: None,
            next_probe: None,
            probing: None,
            rng: seed | 1,
            inflated: 0,
            limit_before: 0.0,
            last_probe_end: None,
            verified: false,
        }
    }

    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline
    }

    pub(crate) fn is_probing(&self) -> bool {
        self.probing.is_some()
    }

    /// During a probe, only samples that started at the probe's limit
    /// measure the unloaded RTT.
    pub(crate) fn accepts(&self, sample: &Sample) -> bool {
        self.probing.is_none_or(|p| sample.in_flight <= p.probe_limit)
    }

    fn jittered(&mut self) -> Duration {
        // xorshift64: enough to spread probes, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng % 2001) as f64 / 10_000.0 - 0.1; // -10 % ..= +10 %
        // Saturating: `mul_f64` panics past `Duration::MAX`.
        Duration::try_from_secs_f64(self.interval.as_secs_f64() * (1.0 + frac))
            .unwrap_or(Duration::MAX)
    }

    pub(crate) fn observe(
        &mut self,
        now: Instant,
        summary: &WindowSummary,
        limit: f64,
        min: usize,
    ) -> Step {
        let rtt = (summary.rtt > Duration::ZERO).then_some(summary.rtt);
        if let Some(mut probing) = self.probing.take() {
            let still_falling = match (rtt, probing.previous_rtt) {
                (Some(rtt), Some(previous)) => rtt.as_secs_f64() < 0.75 * previous.as_secs_f64(),
                _ => false,
            };
            if still_falling && probing.probe_limit > min {
                probing.probe_limit = (probing.probe_limit / 2).max(min);
                probing.previous_rtt = rtt;
                self.probing = Some(probing);
                return Step::Start(probing.probe_limit);
            }
            if let Some(rtt) = rtt {
                self.baseline = Some(rtt);
            }
            self.next_probe = Some(instant_after(now, self.jittered()));
            self.last_probe_end = Some(now);
            self.verified = true;
            self.inflated = 0;
            let mut restore = probing.saved_limit;
            if let (Some((before, Some(old))), Some(new)) = (probing.early, self.baseline) {
                // Half the limit did not bring the RTT down: the backend got
                // slower, and the cuts since the rise were mistaken.
                if new.as_secs_f64() > 1.25 * old.as_secs_f64() {
                    restore = restore.max(before);
                }
            }
            return Step::Restore(restore);
        }
        let inflated = match (rtt, self.baseline) {
            (Some(rtt), Some(b)) => rtt.as_secs_f64() > 1.5 * b.as_secs_f64(),
            _ => false,
        };
        if inflated {
            if self.inflated == 0 {
                self.limit_before = limit;
            }
            self.inflated += 1;
        } else {
            self.inflated = 0;
        }
        if let Some(rtt) = rtt {
            self.baseline = Some(self.baseline.map_or(rtt, |b| b.min(rtt)));
        }
        // Never probe on a congested window: the drops are handled first.
        if self.interval.is_zero() || summary.congested {
            return Step::Normal;
        }
        // The first probe comes right after the first window: a limiter
        // started far above capacity must learn the unloaded RTT early.
        let next = *self.next_probe.get_or_insert(now);
        // Probing is pointless while the service is not using half its limit:
        // the samples are unloaded already.
        let loaded = summary.max_in_flight * 2 >= limit as usize;
        let early = self.inflated >= INFLATED_WINDOWS
            && self.last_probe_end.is_none_or(|end| now >= instant_after(end, self.interval / 5));
        // A scheduled probe re-measures the unloaded RTT. When the RTT is
        // already within 10 % of a baseline a probe has verified, the
        // requests are not queueing downstream and a probe would learn
        // nothing — it would only halve the throughput of an endpoint that
        // is slow but not a bottleneck, every interval.
        let flat = self.verified
            && matches!((rtt, self.baseline), (Some(r), Some(b)) if r.as_secs_f64() <= 1.1 * b.as_secs_f64());
        if ((now >= next && !flat) || early) && loaded {
            let probe_limit = ((limit / 2.0).floor() as usize).max(min);
            let early = early.then_some((self.limit_before, self.baseline));
            self.probing =
                Some(Probing { saved_limit: limit, probe_limit, previous_rtt: rtt, early });
            return Step::Start(probe_limit);
        }
        if now >= next {
            self.next_probe = Some(instant_after(now, self.jittered()));
        }
        Step::Normal
    }
}
