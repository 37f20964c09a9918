//! Reading an upstream's "slow down" from an HTTP or gRPC response:
//! `Retry-After` (RFC 9110 §10.2.3) and `grpc-retry-pushback-ms` (gRPC A6).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, StatusCode};

/// `grpc-status`: the status of a gRPC call (in the headers of a
/// trailers-only response).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// `grpc-retry-pushback-ms`: how long a gRPC server asks its clients to wait.
pub static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// What a response says about when to send the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Nothing: send and retry as usual.
    None,
    /// Wait this long before sending anything more to this upstream.
    After(Duration),
    /// Do not retry this request at all (a negative or malformed
    /// `grpc-retry-pushback-ms`, per gRPC's retry design A6).
    Stop,
}

impl Pushback {
    /// The delay, when there is one.
    pub const fn delay(self) -> Option<Duration> {
        match self {
            Pushback::After(d) => Some(d),
            _ => None,
        }
    }
}

/// Delay-seconds beyond this are clamped: a buggy or hostile upstream must
/// not be able to overflow a deadline computation (callers clamp further,
/// e.g. to a request's deadline).
const MAX_SECONDS: u64 = 24 * 60 * 60;

/// The pushback a response carries.
///
/// - `Retry-After` counts only on 429 and 503 (elsewhere it means something
///   else, e.g. on redirects); both forms are read: delay-seconds and
///   HTTP-date (relative to `now`; a date in the past means "now"). A
///   malformed value is ignored (treated as absent), never an error.
/// - `grpc-retry-pushback-ms` counts on any response (gRPC errors arrive
///   with HTTP 200): non-negative milliseconds are a delay; a negative or
///   malformed value means [`Pushback::Stop`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backpressure_core::{Pushback, pushback};
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let mut h = HeaderMap::new();
/// h.insert("retry-after", HeaderValue::from_static("2"));
/// let now = SystemTime::now();
/// assert_eq!(pushback(StatusCode::SERVICE_UNAVAILABLE, &h, now), Pushback::After(Duration::from_secs(2)));
/// assert_eq!(pushback(StatusCode::OK, &h, now), Pushback::None);
///
/// let mut g = HeaderMap::new();
/// g.insert("grpc-retry-pushback-ms", HeaderValue::from_static("250"));
/// assert_eq!(pushback(StatusCode::OK, &g, now), Pushback::After(Duration::from_millis(250)));
/// ```
pub fn pushback(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Pushback {
    if let Some(v) = headers.get(&GRPC_RETRY_PUSHBACK_MS) {
        return match parse_digits(v.as_bytes()) {
            Some(ms) => Pushback::After(Duration::from_millis(ms.min(MAX_SECONDS * 1000))),
            None => Pushback::Stop,
        };
    }
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return Pushback::None;
    }
    match headers.get(http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.as_bytes(), now))
    {
        Some(d) => Pushback::After(d),
        None => Pushback::None,
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date, relative to
/// `now`. `None` when malformed.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use backpressure_core::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
/// assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(7)));
/// assert_eq!(parse_retry_after(b"Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after(b"-1", now), None);
/// assert_eq!(parse_retry_after(b"soon", now), None);
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    if let Some(secs) = parse_digits(value) {
        return Some(Duration::from_secs(secs.min(MAX_SECONDS)));
    }
    let text = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(delay.min(Duration::from_secs(MAX_SECONDS)))
}

/// ASCII digits only (optional surrounding whitespace), saturating.
fn parse_digits(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// The `grpc-status` a trailers-only gRPC response carries in its headers.
///
/// gRPC errors raised before any message is sent (which is how servers,
/// ours included, reject overload) arrive this way; a status sent in the
/// trailers after a body is not visible to a tower layer without consuming
/// the body.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(&GRPC_STATUS)?;
    let n = parse_digits(v.as_bytes())?;
    u32::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn grpc_pushback_wins_and_negative_means_stop() {
        let now = SystemTime::now();
        let h = headers(&[("grpc-retry-pushback-ms", "-1"), ("retry-after", "3")]);
        assert_eq!(pushback(StatusCode::SERVICE_UNAVAILABLE, &h, now), Pushback::Stop);
        let h = headers(&[("grpc-retry-pushback-ms", "abc")]);
        assert_eq!(pushback(StatusCode::OK, &h, now), Pushback::Stop);
    }

    #[test]
    fn huge_values_are_clamped_not_overflowed() {
        let now = SystemTime::now();
        let h = headers(&[("retry-after", "99999999999999999999")]);
        assert_eq!(
            pushback(StatusCode::TOO_MANY_REQUESTS, &h, now),
            Pushback::After(Duration::from_secs(MAX_SECONDS))
        );
        assert_eq!(parse_digits(b"123456789012345678901"), None);
    }

    proptest::proptest! {
        /// Arbitrary header bytes never panic, never exceed the clamp, and a
        /// malformed `Retry-After` grants no delay at all.
        #[test]
        fn arbitrary_values_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let now = SystemTime::now();
            if let Some(d) = parse_retry_after(&bytes, now) {
                proptest::prop_assert!(d <= Duration::from_secs(MAX_SECONDS));
            }
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert("retry-after", v.clone());
                let said = pushback(StatusCode::TOO_MANY_REQUESTS, &h, now);
                let well_formed = bytes.trim_ascii().iter().all(u8::is_ascii_digit) && !bytes.trim_ascii().is_empty();
                if let Pushback::After(d) = said {
                    proptest::prop_assert!(d <= Duration::from_secs(MAX_SECONDS));
                } else if well_formed && bytes.trim_ascii().len() <= 20 {
                    proptest::prop_assert!(false, "digits must parse: {:?}", bytes);
                }
                h.insert("grpc-retry-pushback-ms", v);
                let _ = pushback(StatusCode::OK, &h, now);
                let _ = grpc_status(&h);
            }
        }

        /// Delay-seconds round-trip exactly below the clamp.
        #[test]
        fn digits_round_trip(secs in 0u64..MAX_SECONDS) {
            let text = secs.to_string();
            proptest::prop_assert_eq!(parse_retry_after(text.as_bytes(), SystemTime::now()), Some(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn grpc_status_reads_digits_only() {
        assert_eq!(grpc_status(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(grpc_status(&headers(&[("grpc-status", "x")])), None);
        assert_eq!(grpc_status(&headers(&[])), None);
    }
}
