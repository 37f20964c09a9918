use std::{error::Error, fmt, str::FromStr};

/// How important a request is, after Google SRE's criticality levels.
///
/// Ordered from least to most important, so `a < b` means `a` is shed first:
///
/// ```
/// use backpressure_core::Priority;
///
/// assert!(Priority::Sheddable < Priority::SheddablePlus);
/// assert!(Priority::SheddablePlus < Priority::Critical);
/// assert!(Priority::Critical < Priority::CriticalPlus);
/// assert_eq!(Priority::default(), Priority::Critical);
/// assert_eq!("sheddable-plus".parse::<Priority>(), Ok(Priority::SheddablePlus));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Work that may be dropped first: batch jobs, prefetches, retries of
    /// background work.
    Sheddable = 0,
    /// Work that may fail with some user impact, but is retried later.
    SheddablePlus = 1,
    /// The default: a user is waiting for this answer.
    #[default]
    Critical = 2,
    /// The most important traffic: health checks of the serving path, auth,
    /// anything whose failure cascades. Shed only when truly overloaded.
    CriticalPlus = 3,
}

impl Priority {
    /// All levels, least important first.
    pub const ALL: [Priority; 4] =
        [Priority::Sheddable, Priority::SheddablePlus, Priority::Critical, Priority::CriticalPlus];

    /// The level's index in [`Priority::ALL`] (0 = `Sheddable`), for
    /// per-priority arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The canonical name: `sheddable`, `sheddable_plus`, `critical`, `critical_plus`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::SheddablePlus => "sheddable_plus",
            Priority::Critical => "critical",
            Priority::CriticalPlus => "critical_plus",
        }
    }

    /// Parses a level from bytes (a header value), case-insensitively,
    /// accepting `_`, `-` or nothing between the words (`CRITICAL_PLUS`,
    /// `critical-plus`, `criticalplus`) and the digits `0`–`3`
    /// (0 = `Sheddable`). Anything else is `None`: the caller decides the
    /// fallback, which should never be a higher priority than a well-formed
    /// value could claim.
    pub fn parse_bytes(bytes: &[u8]) -> Option<Priority> {
        // Longest accepted spelling is "sheddable_plus" (14 bytes).
        if bytes.is_empty() || bytes.len() > 14 {
            return None;
        }
        let mut buf = [0u8; 14];
        let mut len = 0;
        for &b in bytes {
            if b == b'_' || b == b'-' {
                continue;
            }
            buf[len] = b.to_ascii_lowercase();
            len += 1;
        }
        match &buf[..len] {
            b"sheddable" | b"0" => Some(Priority::Sheddable),
            b"sheddableplus" | b"1" => Some(Priority::SheddablePlus),
            b"critical" | b"2" => Some(Priority::Critical),
            b"criticalplus" | b"3" => Some(Priority::CriticalPlus),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Priority`] from a string that names no level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsePriorityError(());

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "unknown priority (expected sheddable, sheddable_plus, critical or critical_plus)",
        )
    }
}

impl Error for ParsePriorityError {}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::parse_bytes(s.as_bytes()).ok_or(ParsePriorityError(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse_bytes(p.as_str().as_bytes()), Some(p));
            assert_eq!(Priority::parse_bytes(p.as_str().to_uppercase().as_bytes()), Some(p));
            assert_eq!(Priority::parse_bytes(p.as_str().replace('_', "-").as_bytes()), Some(p));
            assert_eq!(Priority::parse_bytes(p.index().to_string().as_bytes()), Some(p));
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"4",
            b"-",
            b"critical_plus_plus",
            b"\xff\xfe",
            b"criticalplusxxxxxxxx",
            b"crit",
        ] {
            assert_eq!(Priority::parse_bytes(bad), None, "{bad:?}");
        }
        // Separators alone are stripped, but a value made only of them names nothing.
        assert_eq!(Priority::parse_bytes(b"--__--"), None);
        assert!("nope".parse::<Priority>().is_err());
    }
}
