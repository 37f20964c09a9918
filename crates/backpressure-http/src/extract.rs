//! Rate-limit keys and priorities from HTTP requests.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use backpressure_core::{Extract, Priority};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};

/// The address of the connection's peer, from the request's extensions:
///
/// - a `SocketAddr` (what a hand-written hyper server inserts);
/// - axum's `ConnectInfo<SocketAddr>` (feature `axum`; serve with
///   `into_make_service_with_connect_info::<SocketAddr>()`);
/// - tonic's `TcpConnectInfo` (feature `tonic`; tonic's server inserts it).
///
/// `None` when none is there — see [`ClientIp`] for what happens then.
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    if let Some(addr) = ext.get::<SocketAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = ext
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr.ip());
    }
    None
}

/// Which forwarding header the proxies in front of the server write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` — what most load balancers
    /// (AWS ALB, nginx's `$proxy_add_x_forwarded_for`, GCP, Cloudflare)
    /// append by default.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// An address range, `10.0.0.0/8` or `2001:db8::/32`: the proxies
/// [`ClientIp::trusted_ranges`] may skip (nginx's `set_real_ip_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range of `addr`'s first `prefix` bits.
    ///
    /// # Errors
    ///
    /// When `prefix` exceeds the address's length (32 or 128).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, InvalidIpRange> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(InvalidIpRange(format!("prefix /{prefix} is longer than {max} bits")));
        }
        Ok(IpRange { addr: mask(addr, prefix), prefix })
    }

    /// Whether `ip` lies in the range (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for IpRange {
    type Err = InvalidIpRange;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`/32`, `/128`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = IpAddr::from_str(addr)
            .map_err(|_| InvalidIpRange(format!("{s:?}: not an IP address")))?;
        let prefix = match prefix {
            Some(p) => p.parse().map_err(|_| InvalidIpRange(format!("{s:?}: bad prefix")))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpRange::new(addr, prefix)
    }
}

/// A malformed [`IpRange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIpRange(String);

impl std::fmt::Display for InvalidIpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid IP range: {}", self.0)
    }
}

impl std::error::Error for InvalidIpRange {}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6((bits & m).into())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// The peer alone.
    Peer,
    /// `hops` proxies, each appending to `header`.
    Hops(ForwardingHeader, usize),
    /// Proxies are the addresses in these ranges.
    Ranges(ForwardingHeader, std::sync::Arc<[IpRange]>),
}

/// The client's IP address, for per-client rate limits.
///
/// **Who can influence the key.** By default ([`peer`](Self::peer)) only the
/// connection's peer address counts: nothing a client writes changes its
/// key. Behind proxies, say exactly what they write and how many there are
/// ([`x_forwarded_for`](Self::x_forwarded_for),
/// [`forwarded`](Self::forwarded)) or which addresses they have
/// ([`trusted_ranges`](Self::trusted_ranges)). Only that one header is read,
/// and only the entries the trusted proxies appended: the client is the
/// address `hops` from the right of `[header entries…, peer]`, and everything
/// further left was written by the client itself (tower_governor's `SmartIp`
/// takes the leftmost, which lets any client pick its own key; the first
/// version of this type read `Forwarded` whenever a request carried one, so
/// behind a proxy that appends only `X-Forwarded-For` a client could pick
/// its key with a `Forwarded` header of its own).
///
/// **IPv6 clients are grouped by prefix** (default /64, [`ipv6_prefix`](Self::ipv6_prefix)):
/// one host usually holds a whole /64 and could otherwise rotate through it
/// for a fresh bucket per request.
///
/// Malformed input never grants more than a well-formed request: the walk
/// from the right stops at the first entry that does not parse and uses the
/// last good one (an address a trusted hop vouched for).
///
/// **When there is no peer address** — a server that does not record it
/// (axum without `into_make_service_with_connect_info`, or the facade without
/// its `axum`/`tonic` feature) — the choice is yours:
///
/// - by default every such request gets the shared key `0.0.0.0`: one
///   bucket for everybody, a degraded service rather than an outage;
/// - with [`RefuseUnknownPeer`] as the rate limit's cost, every such
///   request is refused (429, no `Retry-After`) instead.
///
/// Either way it is never silent: the first time, an error is logged
/// (`tracing`), and every time [`ClientIp::missing_peer_count`] counts it
/// (and, with the `metrics` feature, the counter
/// `backpressure_client_ip_missing_peer_total`).
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use backpressure_core::Extract;
/// use backpressure_http::ClientIp;
///
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7") // spoofed, then real
///     .header("forwarded", "for=7.7.7.7") // written by the client: never read
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert("10.0.0.2:443".parse::<SocketAddr>().unwrap()); // our proxy
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// assert_eq!(ClientIp::x_forwarded_for(1).extract(&req), ip("203.0.113.7"));
/// assert_eq!(ClientIp::trusted_ranges(["10.0.0.0/8".parse().unwrap()]).extract(&req), ip("203.0.113.7"));
/// assert_eq!(ClientIp::peer().extract(&req), ip("10.0.0.2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    trust: Trust,
    ipv6_prefix: u8,
}

static MISSING_PEER: AtomicU64 = AtomicU64::new(0);

impl ClientIp {
    /// The connection's peer; forwarding headers are ignored.
    pub const fn peer() -> Self {
        ClientIp { trust: Trust::Peer, ipv6_prefix: 64 }
    }

    /// Behind `hops` proxies that each append to `X-Forwarded-For` (most
    /// load balancers' default). Same as
    /// [`x_forwarded_for(hops)`](Self::x_forwarded_for); `Forwarded` is
    /// never read.
    pub const fn behind_proxies(hops: usize) -> Self {
        Self::x_forwarded_for(hops)
    }

    /// Behind `hops` proxies that each append to `X-Forwarded-For`.
    pub const fn x_forwarded_for(hops: usize) -> Self {
        let trust = if hops == 0 {
            Trust::Peer
        } else {
            Trust::Hops(ForwardingHeader::XForwardedFor, hops)
        };
        ClientIp { trust, ipv6_prefix: 64 }
    }

    /// Behind `hops` proxies that each append to `Forwarded` (RFC 7239).
    pub const fn forwarded(hops: usize) -> Self {
        let trust =
            if hops == 0 { Trust::Peer } else { Trust::Hops(ForwardingHeader::Forwarded, hops) };
        ClientIp { trust, ipv6_prefix: 64 }
    }

    /// Behind proxies whose addresses lie in `ranges`, appending to
    /// `X-Forwarded-For`: walking from the right of `[entries…, peer]`, the
    /// client is the first address outside every range (nginx's
    /// `set_real_ip_from` with `real_ip_recursive on`). A peer outside the
    /// ranges is the client itself, whatever the headers say.
    pub fn trusted_ranges(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        Self::trusted_ranges_in(ForwardingHeader::XForwardedFor, ranges)
    }

    /// [`trusted_ranges`](Self::trusted_ranges) for proxies that write
    /// `header`.
    pub fn trusted_ranges_in(
        header: ForwardingHeader,
        ranges: impl IntoIterator<Item = IpRange>,
    ) -> Self {
        ClientIp { trust: Trust::Ranges(header, ranges.into_iter().collect()), ipv6_prefix: 64 }
    }

    /// Groups IPv6 clients by their first `bits` bits (default 64; 128 keys
    /// each address alone). Values above 128 are 128.
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Requests so far, process-wide, that had no peer address and shared
    /// the key `0.0.0.0`.
    pub fn missing_peer_count() -> u64 {
        MISSING_PEER.load(Relaxed)
    }

    /// The client address of `req` under this configuration.
    fn client(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> IpAddr {
        let Some(peer) = peer else {
            missing_peer();
            return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        };
        let ip = match &self.trust {
            Trust::Peer => peer,
            Trust::Hops(header, hops) => {
                walk(headers, *header, peer, |_, position| position >= *hops)
            }
            Trust::Ranges(header, ranges) => {
                walk(headers, *header, peer, |ip, _| !ranges.iter().any(|r| r.contains(ip)))
            }
        };
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 => mask(v6, self.ipv6_prefix),
        }
    }
}

/// A rate limit's cost for requests keyed by [`ClientIp`] that refuses the
/// requests with no peer address instead of putting them all in the shared
/// `0.0.0.0` bucket: they cost more than any burst, so the rate limit turns
/// them away at once (429, no `Retry-After`: waiting will not help). Every
/// other request costs 1.
///
/// ```
/// use backpressure_http::{ClientIp, RefuseUnknownPeer};
/// use backpressure_rate::{Quota, RateLimitLayer};
///
/// let layer = RateLimitLayer::builder(Quota::per_second(20))
///     .keyed(ClientIp::peer())
///     .cost(RefuseUnknownPeer)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseUnknownPeer;

impl<B> Extract<Request<B>> for RefuseUnknownPeer {
    type Output = u32;

    fn extract(&self, req: &Request<B>) -> u32 {
        // Not counted here: the `ClientIp` key of the same request already
        // logged and counted the missing peer.
        if peer_ip(req).is_some() { 1 } else { u32::MAX }
    }
}

#[cold]
fn missing_peer() {
    if MISSING_PEER.fetch_add(1, Relaxed) == 0 {
        tracing::error!(
            "ClientIp: the request carries no peer address, so every client shares the rate-limit key 0.0.0.0 (one bucket for everybody). Serve axum with `into_make_service_with_connect_info::<SocketAddr>()` and enable the `axum` feature (tonic: the `tonic` feature), or insert the peer's `SocketAddr` into the request's extensions. Logged once; counted by ClientIp::missing_peer_count()."
        );
    }
    crate::metrics::missing_peer();
}

impl<B> Extract<Request<B>> for ClientIp {
    type Output = IpAddr;

    fn extract(&self, req: &Request<B>) -> IpAddr {
        self.client(req.headers(), peer_ip(req))
    }
}

/// [`ClientIp::x_forwarded_for`]'s rule on raw parts: the address
/// `trusted_hops` from the right of `[X-Forwarded-For entries…, peer]`
/// (no IPv6 grouping; a missing peer is `0.0.0.0`).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted_hops: usize) -> IpAddr {
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if trusted_hops == 0 {
        return peer;
    }
    walk(headers, ForwardingHeader::XForwardedFor, peer, |_, position| position >= trusted_hops)
}

/// Walks `[entries of header…, peer]` from the right: `stop(ip, position)`
/// says whether the address at `position` (1 = the rightmost entry) is the
/// client. Stops at the first entry that does not parse, keeping the last
/// good address.
fn walk(
    headers: &HeaderMap,
    header: ForwardingHeader,
    peer: IpAddr,
    mut is_client: impl FnMut(IpAddr, usize) -> bool,
) -> IpAddr {
    if is_client(peer, 0) {
        return peer;
    }
    let name = match header {
        ForwardingHeader::Forwarded => header::FORWARDED,
        ForwardingHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
    };
    let mut best = peer;
    let mut position = 0;
    for value in headers.get_all(&name).iter().rev() {
        let Ok(value) = value.to_str() else { return best };
        for entry in value.rsplit(',') {
            let parsed = match header {
                ForwardingHeader::Forwarded => parse_forwarded_for(entry),
                ForwardingHeader::XForwardedFor => parse_addr(entry),
            };
            let Some(ip) = parsed else { return best };
            best = ip;
            position += 1;
            if is_client(ip, position) {
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

/// A request's [`Priority`] from a header the server chose, values as
/// [`Priority::parse_bytes`] reads them; a missing or unknown value maps to
/// the default priority.
///
/// **The default reads no header at all**: every request gets the default
/// priority, and nothing a client sends raises it. A client-controlled
/// priority lets any client declare itself `critical-plus`, never be shed,
/// and evict queued requests; and the header the first version read,
/// `priority`, is RFC 9218's, which browsers send on their own. Opt in with
/// [`new`](Self::new) and a header only your own trusted callers (or a proxy
/// that strips it from outside traffic) can set.
///
/// ```
/// use backpressure_core::{Extract, Priority};
/// use backpressure_http::PriorityHeader;
///
/// let req = http::Request::builder()
///     .header("priority", "critical-plus") // from a client
///     .header("x-internal-priority", "sheddable") // from our own batch jobs
///     .body(())
///     .unwrap();
/// assert_eq!(PriorityHeader::default().extract(&req), Priority::Critical);
/// let ours = PriorityHeader::new(http::HeaderName::from_static("x-internal-priority"), Priority::Critical);
/// assert_eq!(ours.extract(&req), Priority::Sheddable);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PriorityHeader {
    name: Option<HeaderName>,
    default: Priority,
}

impl PriorityHeader {
    /// Reads `name`; missing or unknown values are `default`.
    pub fn new(name: HeaderName, default: Priority) -> Self {
        PriorityHeader { name: Some(name), default }
    }

    /// The header read, if any (none by default).
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.name.as_ref()
    }
}

impl<B> Extract<Request<B>> for PriorityHeader {
    type Output = Priority;

    fn extract(&self, req: &Request<B>) -> Priority {
        self.name
            .as_ref()
            .and_then(|name| req.headers().get(name))
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

    fn key(c: &ClientIp, h: &HeaderMap, peer: &str) -> IpAddr {
        c.client(h, Some(ip(peer)))
    }

    #[test]
    fn forwarded_is_read_only_when_configured() {
        let mut h =
            headers("forwarded", &["for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\""]);
        h.append("x-forwarded-for", HeaderValue::from_static("9.9.9.9"));
        let six = ClientIp::forwarded(1).ipv6_prefix(128);
        assert_eq!(key(&six, &h, "10.0.0.1"), ip("2001:db8:cafe::17"));
        assert_eq!(key(&ClientIp::forwarded(2), &h, "10.0.0.1"), ip("192.0.2.60"));
        assert_eq!(key(&ClientIp::x_forwarded_for(1), &h, "10.0.0.1"), ip("9.9.9.9"));
        let h = headers("forwarded", &["for=unknown, for=\"198.51.100.1:8080\""]);
        let two = ClientIp::forwarded(2);
        assert_eq!(key(&two, &h, "10.0.0.1"), ip("198.51.100.1"), "stops at an unparseable entry");
    }

    /// Behind a proxy that appends only `X-Forwarded-For`, a client that
    /// sends its own `Forwarded` must not pick its key. The first version
    /// preferred `Forwarded` whenever present: this returned 6.6.6.6.
    #[test]
    fn a_client_written_forwarded_header_is_ignored() {
        let mut h = headers("forwarded", &["for=6.6.6.6"]);
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        let mut req = Request::builder().body(()).unwrap();
        *req.headers_mut() = h;
        req.extensions_mut().insert("10.0.0.2:443".parse::<SocketAddr>().unwrap());
        assert_eq!(ClientIp::behind_proxies(1).extract(&req), ip("203.0.113.7"));
    }

    #[test]
    fn trusted_ranges_skip_known_proxies_only() {
        let ranges: Vec<IpRange> =
            ["10.0.0.0/8", "2001:db8::/32"].iter().map(|r| r.parse().unwrap()).collect();
        let c = ClientIp::trusted_ranges(ranges);
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(key(&c, &h, "10.0.0.2"), ip("203.0.113.7"), "two trusted hops skipped");
        assert_eq!(
            key(&c, &h, "198.51.100.9"),
            ip("198.51.100.9"),
            "an untrusted peer is the client"
        );
        let h = headers("x-forwarded-for", &["10.9.9.9"]);
        assert_eq!(key(&c, &h, "10.0.0.2"), ip("10.9.9.9"), "all trusted: the leftmost known");
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("banana/8".parse::<IpRange>().is_err());
        let one: IpRange = "192.0.2.1".parse().unwrap();
        assert!(one.contains(ip("192.0.2.1")) && !one.contains(ip("192.0.2.2")));
        assert!(one.contains(ip("::ffff:192.0.2.1")), "IPv4-mapped IPv6");
    }

    /// One host usually holds a whole /64: without grouping it can rotate
    /// through it for a fresh bucket per request.
    #[test]
    fn ipv6_clients_are_grouped_by_prefix() {
        let h = HeaderMap::new();
        let peer = ClientIp::peer();
        assert_eq!(key(&peer, &h, "2001:db8:1:2:aaaa::1"), key(&peer, &h, "2001:db8:1:2:bbbb::9"));
        assert_eq!(key(&peer, &h, "2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2::"));
        assert_ne!(key(&peer, &h, "2001:db8:1:2::1"), key(&peer, &h, "2001:db8:1:3::1"));
        let exact = ClientIp::peer().ipv6_prefix(128);
        assert_eq!(key(&exact, &h, "2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(
            key(&peer, &h, "::ffff:192.0.2.1"),
            ip("192.0.2.1"),
            "IPv4-mapped: the IPv4 key"
        );
    }

    #[test]
    fn a_missing_peer_is_counted() {
        let before = ClientIp::missing_peer_count();
        assert_eq!(ClientIp::peer().extract(&Request::new(())), ip("0.0.0.0"));
        assert!(ClientIp::missing_peer_count() > before);
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
        let req = |v: &str| Request::builder().header("priority", v).body(()).unwrap();
        assert_eq!(PriorityHeader::default().extract(&req("critical-plus")), Priority::Critical);
        let extract = PriorityHeader::new(HeaderName::from_static("priority"), Priority::Critical);
        assert_eq!(extract.extract(&req("sheddable")), Priority::Sheddable);
        assert_eq!(extract.extract(&req("CRITICAL-PLUS")), Priority::CriticalPlus);
        assert_eq!(extract.extract(&req("urgent!!")), Priority::Critical);
        assert_eq!(extract.extract(&Request::new(())), Priority::Critical);
    }

    proptest! {
        /// Whatever a client writes in front of what the trusted proxy
        /// appended — in either header — the key is what the proxy wrote.
        #[test]
        fn spoofed_prefixes_never_change_the_key(
            spoof_xff in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            spoof_fwd in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            real in any::<[u8; 4]>(),
            forwarded in any::<bool>(),
        ) {
            let real = IpAddr::from(real);
            let list = |v: &[[u8; 4]], fwd: bool| {
                v.iter()
                    .map(|a| if fwd { format!("for={}", IpAddr::from(*a)) } else { IpAddr::from(*a).to_string() })
                    .collect::<Vec<_>>()
            };
            let mut xff = list(&spoof_xff, false);
            let mut fwd = list(&spoof_fwd, true);
            if forwarded { fwd.push(format!("for={real}")) } else { xff.push(real.to_string()) }
            let mut h = HeaderMap::new();
            if !xff.is_empty() {
                h.append("x-forwarded-for", HeaderValue::from_str(&xff.join(", ")).unwrap());
            }
            if !fwd.is_empty() {
                h.append("forwarded", HeaderValue::from_str(&fwd.join(", ")).unwrap());
            }
            let c = if forwarded { ClientIp::forwarded(1) } else { ClientIp::x_forwarded_for(1) };
            prop_assert_eq!(c.client(&h, Some(ip("10.0.0.2"))), real.to_canonical());
            let ranged = ClientIp::trusted_ranges_in(
                if forwarded { ForwardingHeader::Forwarded } else { ForwardingHeader::XForwardedFor },
                ["10.0.0.0/8".parse().unwrap()],
            );
            if !IpRange::from_str("10.0.0.0/8").unwrap().contains(real) {
                prop_assert_eq!(ranged.client(&h, Some(ip("10.0.0.2"))), real.to_canonical());
            }
        }

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
            prop_assert_eq!(PriorityHeader::default().extract(&req), Priority::default());
            let opted = PriorityHeader::new(HeaderName::from_static("priority"), Priority::Critical);
            let got = opted.extract(&req);
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
