//! The `grpc-timeout` header: strict parsing and encoding.
//!
//! The gRPC wire format is `TimeoutValue TimeoutUnit`: one to eight ASCII
//! digits, then one of `H` (hours), `M` (minutes), `S` (seconds),
//! `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds). Pure functions,
//! no allocation, usable on their own.

use std::{fmt, time::Duration};

/// The largest value the format allows (eight digits).
const MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value strictly.
///
/// Anything but one to eight ASCII digits followed by exactly one unit is
/// `None` — the caller then behaves as if no timeout was sent. Never panics.
///
/// ```
/// use std::time::Duration;
/// use backpressure_timeout::grpc::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(b"123456789m"), None); // nine digits
/// assert_eq!(parse_grpc_timeout(b"10 S"), None);
/// assert_eq!(parse_grpc_timeout(b"-1S"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most eight digits: fits a u64 with room to spare, no overflow check needed.
    let n = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// An encoded `grpc-timeout` value, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeout {
    buf: [u8; 9],
    len: u8,
}

impl GrpcTimeout {
    /// The value as text, e.g. `"1500m"`.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and a unit letter are ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("0n")
    }
}

impl fmt::Debug for GrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for GrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes a remaining budget as a `grpc-timeout` value, in the finest unit
/// that fits eight digits, rounding down so the downstream is never promised
/// more time than is left. Budgets beyond 99,999,999 hours are capped.
///
/// ```
/// use std::time::Duration;
/// use backpressure_timeout::grpc::encode_grpc_timeout;
///
/// assert_eq!(encode_grpc_timeout(Duration::from_millis(50)).as_str(), "50000000n");
/// assert_eq!(encode_grpc_timeout(Duration::from_millis(1500)).as_str(), "1500000u");
/// assert_eq!(encode_grpc_timeout(Duration::from_secs(3600)).as_str(), "3600000m");
/// ```
pub fn encode_grpc_timeout(budget: Duration) -> GrpcTimeout {
    let nanos = budget.as_nanos();
    let units: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(value, _)| value <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), b'H'));
    let mut digits = [0u8; 8];
    let mut n = value as u64; // <= MAX_VALUE
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut buf = [0u8; 9];
    let len = digits.len() - i;
    buf[..len].copy_from_slice(&digits[i..]);
    buf[len] = unit;
    GrpcTimeout { buf, len: (len + 1) as u8 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"2m"), Some(Duration::from_millis(2)));
        assert_eq!(parse_grpc_timeout(b"2u"), Some(Duration::from_micros(2)));
        assert_eq!(parse_grpc_timeout(b"2n"), Some(Duration::from_nanos(2)));
        assert_eq!(parse_grpc_timeout(b"0m"), Some(Duration::ZERO));
        assert_eq!(parse_grpc_timeout(b"99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn malformed_values() {
        for bad in [
            &b""[..],
            b"m",
            b"1",
            b"1x",
            b"1h",
            b"1s",
            b"+1S",
            b"1.5S",
            b" 1S",
            b"1S ",
            b"1SS",
            b"123456789n",
            b"\xff1S",
            b"1\x00S",
            "١S".as_bytes(),
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encode_edges() {
        assert_eq!(encode_grpc_timeout(Duration::ZERO).as_str(), "0n");
        assert_eq!(encode_grpc_timeout(Duration::from_nanos(99_999_999)).as_str(), "99999999n");
        assert_eq!(encode_grpc_timeout(Duration::from_nanos(100_000_000)).as_str(), "100000u");
        assert_eq!(encode_grpc_timeout(Duration::MAX).as_str(), "99999999H");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&bytes);
        }

        #[test]
        fn encode_round_trips_without_overstating(nanos in 0u64..u64::MAX) {
            let budget = Duration::from_nanos(nanos);
            let encoded = encode_grpc_timeout(budget);
            let decoded = parse_grpc_timeout(encoded.as_str().as_bytes()).expect("our encoding parses");
            prop_assert!(decoded <= budget);
            // Rounding down loses less than one unit, and a coarser unit is
            // only chosen once the value has eight digits in the finer one:
            // the loss is below 1/100,000 of the budget.
            prop_assert!(budget - decoded <= budget / 100_000 + Duration::from_nanos(1));
        }
    }
}
