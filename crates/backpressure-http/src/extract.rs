//! Rate-limit keys and priorities from HTTP requests.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
};

use backpressure_core::{Extract, Priority};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};

/// The address of the connection's peer: a `SocketAddr` in the request's
/// extensions (hyper users insert it), or axum's `ConnectInfo<SocketAddr>`
/// with the `axum` feature.
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(addr) = req.extensions().get::<SocketAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    None
}

/// The client's IP address, for per-client rate limits.
///
/// Behind `n` trusted proxies, each appends the address it saw to
/// `Forwarded` (preferred, RFC 7239) or `X-Forwarded-For`. The client is the
/// address `n` hops from the right of `[header entries…, peer]`: the entries
/// further left were written by the client itself — tower_governor's
/// `SmartIp` takes the leftmost, which lets any client pick its own key.
///
/// Malformed input never grants more than a well-formed request: the walk
/// from the right stops at the first entry that does not parse and uses the
/// last good one (an address a trusted hop vouched for); no peer address at
/// all is the shared key `0.0.0.0`.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use backpressure_core::Extract;
/// use backpressure_http::ClientIp;
///
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7") // spoofed, then real
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert("10.0.0.2:443".parse::<SocketAddr>().unwrap()); // our proxy
/// assert_eq!(ClientIp::behind_proxies(1).extract(&req), "203.0.113.7".parse::<IpAddr>().unwrap());
/// assert_eq!(ClientIp::peer().extract(&req), "10.0.0.2".parse::<IpAddr>().unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    trusted_hops: usize,
}

impl ClientIp {
    /// The connection's peer; forwarding headers are ignored.
    pub const fn peer() -> Self {
        ClientIp { trusted_hops: 0 }
    }

    /// Behind `hops` trusted proxies (load balancers, CDNs).
    pub const fn behind_proxies(hops: usize) -> Self {
        ClientIp { trusted_hops: hops }
    }
}

impl<B> Extract<Request<B>> for ClientIp {
    type Output = IpAddr;

    fn extract(&self, req: &Request<B>) -> IpAddr {
        client_ip(req.headers(), peer_ip(req), self.trusted_hops)
    }
}

/// [`ClientIp`]'s rule on raw parts: the address `trusted_hops` from the
/// right of `[forwarding entries…, peer]`.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted_hops: usize) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if trusted_hops == 0 {
        return peer;
    }
    let forwarded = headers.contains_key(header::FORWARDED);
    let name =
        if forwarded { header::FORWARDED } else { HeaderName::from_static("x-forwarded-for") };
    let mut best = peer;
    let mut position = 0;
    for value in headers.get_all(&name).iter().rev() {
        let Ok(value) = value.to_str() else { return best };
        for entry in value.rsplit(',') {
            let parsed = if forwarded { parse_forwarded_for(entry) } else { parse_addr(entry) };
            let Some(ip) = parsed else { return best };
            best = ip;
            position += 1;
            if position == trusted_hops {
                return best;
            }
        }
    }
    best
}

fn parse_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    IpAddr::from_str(entry).ok().or_else(|| SocketAddr::from_str(entry).ok().map(|s| s.ip()))
}

/// The `for=` of one `Forwarded` element: `192.0.2.60`,
/// `"[2001:db8::17]:4711"`, `"192.0.2.60:80"`; `unknown` and obfuscated
/// identifiers are not addresses.
fn parse_forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return IpAddr::from_str(ip).ok();
    }
    parse_addr(value)
}

/// A header's value as the key (`None`, one shared bucket, when absent).
#[derive(Debug, Clone)]
pub struct HeaderKey(pub HeaderName);

impl<B> Extract<Request<B>> for HeaderKey {
    type Output = Option<HeaderValue>;

    fn extract(&self, req: &Request<B>) -> Option<HeaderValue> {
        req.headers().get(&self.0).cloned()
    }
}

/// The path as the key (one allocation per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct PathKey;

impl<B> Extract<Request<B>> for PathKey {
    type Output = String;

    fn extract(&self, req: &Request<B>) -> String {
        req.uri().path().to_owned()
    }
}

/// The method as the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodKey;

impl<B> Extract<Request<B>> for MethodKey {
    type Output = Method;

    fn extract(&self, req: &Request<B>) -> Method {
        req.method().clone()
    }
}

/// A request's [`Priority`] from a header (default name `priority`, values as
/// [`Priority::parse_bytes`] reads them). A missing or unknown value maps to
/// the default priority.
#[derive(Debug, Clone)]
pub struct PriorityHeader {
    name: HeaderName,
    default: Priority,
}

impl Default for PriorityHeader {
    fn default() -> Self {
        PriorityHeader { name: HeaderName::from_static("priority"), default: Priority::default() }
    }
}

impl PriorityHeader {
    /// Reads `name`; unknown values are `default`.
    pub fn new(name: HeaderName, default: Priority) -> Self {
        PriorityHeader { name, default }
    }
}

impl<B> Extract<Request<B>> for PriorityHeader {
    type Output = Priority;

    fn extract(&self, req: &Request<B>) -> Priority {
        req.headers()
            .get(&self.name)
            .and_then(|v| Priority::parse_bytes(v.as_bytes()))
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hops_from_the_right() {
        let peer = Some(ip("10.0.0.1"));
        let h = headers("x-forwarded-for", &["1.1.1.1, 2.2.2.2", "3.3.3.3"]);
        assert_eq!(client_ip(&h, peer, 0), ip("10.0.0.1"));
        assert_eq!(client_ip(&h, peer, 1), ip("3.3.3.3"));
        assert_eq!(client_ip(&h, peer, 2), ip("2.2.2.2"));
        assert_eq!(client_ip(&h, peer, 3), ip("1.1.1.1"));
        assert_eq!(
            client_ip(&h, peer, 9),
            ip("1.1.1.1"),
            "fewer hops than configured: the leftmost known"
        );
        assert_eq!(client_ip(&HeaderMap::new(), peer, 1), ip("10.0.0.1"), "no header: the peer");
        assert_eq!(client_ip(&HeaderMap::new(), None, 0), ip("0.0.0.0"));
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let mut h =
            headers("forwarded", &["for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\""]);
        h.append("x-forwarded-for", HeaderValue::from_static("9.9.9.9"));
        assert_eq!(client_ip(&h, None, 1), ip("2001:db8:cafe::17"));
        assert_eq!(client_ip(&h, None, 2), ip("192.0.2.60"));
        let h = headers("forwarded", &["for=unknown, for=\"198.51.100.1:8080\""]);
        assert_eq!(client_ip(&h, None, 2), ip("198.51.100.1"), "stops at an unparseable entry");
    }

    #[test]
    fn malformed_entries_stop_the_walk() {
        let peer = Some(ip("10.0.0.1"));
        let h = headers("x-forwarded-for", &["1.1.1.1, garbage, 3.3.3.3"]);
        assert_eq!(
            client_ip(&h, peer, 3),
            ip("3.3.3.3"),
            "never past garbage to a client-written entry"
        );
        let h = headers("x-forwarded-for", &["3.3.3.3:8080"]);
        assert_eq!(client_ip(&h, peer, 1), ip("3.3.3.3"));
    }

    #[test]
    fn priority_header() {
        let extract = PriorityHeader::default();
        let req = |v: &str| Request::builder().header("priority", v).body(()).unwrap();
        assert_eq!(extract.extract(&req("sheddable")), Priority::Sheddable);
        assert_eq!(extract.extract(&req("CRITICAL-PLUS")), Priority::CriticalPlus);
        assert_eq!(extract.extract(&req("urgent!!")), Priority::Critical);
        assert_eq!(extract.extract(&Request::new(())), Priority::Critical);
    }

    proptest! {
        /// Arbitrary bytes in the forwarding headers never panic.
        #[test]
        fn parsers_never_panic(xff in proptest::collection::vec(any::<u8>(), 0..64),
                               fwd in proptest::collection::vec(any::<u8>(), 0..64),
                               hops in 0usize..5) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&xff) {
                h.append("x-forwarded-for", v.clone());
                let _ = client_ip(&h, None, hops);
            }
            if let Ok(v) = HeaderValue::from_bytes(&fwd) {
                h.append("forwarded", v);
                let _ = client_ip(&h, Some(ip("10.0.0.1")), hops);
            }
            if let Ok(v) = HeaderValue::from_bytes(&fwd) {
                let req = Request::builder().header("priority", v).body(()).unwrap();
                let _ = PriorityHeader::default().extract(&req);
            }
        }

        /// A priority header that is not exactly a known name or index maps
        /// to the default: malformed input never buys a higher priority.
        #[test]
        fn malformed_priorities_get_the_default(value in "[ -~]{0,24}") {
            let req = Request::builder().header("priority", value.as_str()).body(()).unwrap();
            let got = PriorityHeader::default().extract(&req);
            match Priority::parse_bytes(value.as_bytes()) {
                Some(p) => prop_assert_eq!(got, p),
                None => prop_assert_eq!(got, Priority::default()),
            }
            let known = Priority::ALL.iter().any(|p| {
                let v = value.trim().to_ascii_lowercase().replace('_', "-");
                v == p.as_str().replace('_', "-") || v == p.index().to_string()
            });
            if !known {
                prop_assert_eq!(got, Priority::default());
            }
        }

        /// Whatever a client writes in front, behind one trusted proxy its
        /// key is the address the proxy appended.
        #[test]
        fn spoofing_does_not_change_the_key(spoofed in proptest::collection::vec(any::<[u8; 4]>(), 0..6),
                                            garbage in "[ -~]{0,20}",
                                            real in any::<[u8; 4]>()) {
            let real = IpAddr::from(real);
            let mut line: Vec<String> = spoofed.iter().map(|o| IpAddr::from(*o).to_string()).collect();
            line.push(garbage.replace(',', ";"));
            let client_written = line.join(", ");
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("{client_written}, {real}")) {
                h.append("x-forwarded-for", v);
                prop_assert_eq!(client_ip(&h, Some(ip("10.0.0.1")), 1), real);
            }
        }
    }
}
