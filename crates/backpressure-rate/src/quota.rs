use std::time::Duration;

use backpressure_core::ConfigError;

/// How much traffic a bucket admits: `count` per `period`, with bursts of up
/// to `burst` (default: `count`).
///
/// `Quota::per_second(100)` means a hundred per second — not "one per 100
/// seconds" (tower_governor's `per_second(n)`). Nothing is validated until
/// the layer is built, which returns a [`ConfigError`] naming the bad field;
/// constructing a quota never panics.
///
/// ```
/// use std::time::Duration;
/// use backpressure_rate::Quota;
///
/// let api = Quota::per_second(100);                        // 100/s, bursts of 100
/// let login = Quota::per_minute(5).burst(2);               // 5/min, at most 2 at once
/// let custom = Quota::per(30, Duration::from_secs(10));    // 30 per 10 s
/// assert_eq!(api.emission_interval(), Some(Duration::from_millis(10)));
/// assert_eq!(login.burst_size(), 2);
/// assert_eq!(custom.burst_size(), 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: Option<u32>,
}

impl Quota {
    /// `count` per second.
    pub const fn per_second(count: u32) -> Self {
        Self::per(count, Duration::from_secs(1))
    }

    /// `count` per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::per(count, Duration::from_secs(60))
    }

    /// `count` per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::per(count, Duration::from_secs(3600))
    }

    /// `count` per `period`.
    pub const fn per(count: u32, period: Duration) -> Self {
        Quota { count, period, burst: None }
    }

    /// The most cost admitted at once, after a quiet spell (default:
    /// `count`). A request whose cost exceeds it can never conform.
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Requests per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst size.
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.count,
        }
    }

    /// The time one unit of cost "costs": `period / count`. `None` when the
    /// quota is invalid.
    pub fn emission_interval(&self) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let nanos = self.period.as_nanos() / u128::from(self.count);
        (nanos > 0).then(|| Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    /// Checks the quota; layer builders call it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `quota.count`, `quota.period` or `quota.burst`.
    pub fn validate(&self, layer: &'static str) -> Result<(), ConfigError> {
        if self.count == 0 {
            return Err(ConfigError::new(layer, "quota.count", "must be at least 1"));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(layer, "quota.period", "must be greater than zero"));
        }
        let Some(t) = self.emission_interval() else {
            return Err(ConfigError::new(
                layer,
                "quota.count",
                format!("{} per {:?} is more than one per nanosecond", self.count, self.period),
            ));
        };
        let burst = self.burst_size();
        if burst == 0 {
            return Err(ConfigError::new(layer, "quota.burst", "must be at least 1"));
        }
        if t.as_nanos().saturating_mul(u128::from(burst)) > u128::from(u64::MAX / 4) {
            return Err(ConfigError::new(
                layer,
                "quota.burst",
                "burst × period / count is too long to represent",
            ));
        }
        Ok(())
    }
}
