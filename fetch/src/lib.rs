//! Fetching files from URLs for uploads, without letting a bot reach the gateway's own network
//! (server-side request forgery).
//!
//! A URL must be `http` or `https`. Every address a host name resolves to is checked (one bad
//! address refuses the name: DNS answers can mix), at resolution time inside the HTTP client, so
//! the address checked is the address connected to (no rebinding window); IP literals, which
//! skip resolution, are checked on the URL itself; every redirect hop is checked again.
//! Refused: loopback, private, link-local, multicast, unspecified, broadcast, shared (CGNAT),
//! reserved and documentation ranges, and IPv6 forms that embed any of those (IPv4-mapped,
//! IPv4-compatible, NAT64, 6to4) or are not globally routed (unique local, site-local, Teredo).
//! The `url` crate reads a host the way browsers do, so decimal, octal, hex and shortened IPv4
//! forms (`2130706433`, `0177.1`, `0x7f.1`, `127.1`) arrive here as the address they mean.
//! Limits: size (from Content-Length before reading, and while streaming), total time, redirects.
//! `FetchPolicy::allow_private` turns the address checks off (tests, trusted deployments);
//! `allowed` lets chosen networks through (a test's stand-in for a public server).

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Allow every address (`--allow-private-urls`).
    pub allow_private: bool,
    /// Networks allowed although they would be refused: (address, prefix length).
    pub allowed: Vec<(IpAddr, u8)>,
    pub max_redirects: usize,
    /// Whole fetch, headers and body.
    pub timeout: Duration,
    pub max_size: u64,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_private: false,
            allowed: Vec::new(),
            max_redirects: 5,
            timeout: Duration::from_secs(600),
            max_size: 2000 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the URL is malformed")]
    BadUrl,
    #[error("only http and https URLs can be fetched")]
    Scheme,
    #[error("the URL's host {host} is {why}, which the gateway does not fetch from")]
    Refused { host: String, why: &'static str },
    #[error("the URL's host cannot be resolved")]
    Unresolved,
    #[error("the URL redirects more than {0} times")]
    Redirects(usize),
    #[error("the file at the URL is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the URL answered HTTP {0}")]
    Status(u16),
    #[error("the URL did not answer in time")]
    Timeout,
    #[error("fetching the URL failed")]
    Failed,
}

/// Why an address is refused, or `None` when it is a public one.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    Some(match ip {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() || in_v4(ip, [0, 0, 0, 0], 8) => "an unspecified address",
        _ if ip.is_private() => "a private address",
        _ if ip.is_link_local() => "a link-local address",
        _ if ip.is_multicast() => "a multicast address",
        _ if ip.is_broadcast() => "a broadcast address",
        _ if in_v4(ip, [100, 64, 0, 0], 10) => "a shared (carrier-grade NAT) address",
        _ if in_v4(ip, [192, 0, 0, 0], 24) => "a reserved address",
        _ if in_v4(ip, [198, 18, 0, 0], 15) => "a benchmarking address",
        _ if in_v4(ip, [192, 0, 2, 0], 24)
            || in_v4(ip, [198, 51, 100, 0], 24)
            || in_v4(ip, [203, 0, 113, 0], 24) =>
        {
            "a documentation address"
        }
        _ if in_v4(ip, [240, 0, 0, 0], 4) => "a reserved address",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4).or(Some("an IPv4-mapped address"));
    }
    Some(match s {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_multicast() => "a multicast address",
        [a, ..] if a & 0xffc0 == 0xfe80 => "a link-local address",
        [a, ..] if a & 0xffc0 == 0xfec0 => "a site-local address",
        [a, ..] if a & 0xfe00 == 0xfc00 => "a unique local address",
        // ::a.b.c.d (IPv4-compatible, deprecated) and 64:ff9b::a.b.c.d (NAT64) reach IPv4.
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            return refused_v4(v4).or(Some("an address embedding IPv4"));
        }
        [0x2002, b, c, ..] => {
            let v4 = Ipv4Addr::new((b >> 8) as u8, b as u8, (c >> 8) as u8, c as u8);
            return refused_v4(v4).or(Some("a 6to4 address"));
        }
        [0x2001, 0, ..] => "a Teredo address",
        [0x2001, 0xdb8, ..] => "a documentation address",
        _ => return None,
    })
}

impl FetchPolicy {
    fn allows(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow_private {
            return Ok(());
        }
        let Some(why) = refused(ip) else {
            return Ok(());
        };
        let listed = self.allowed.iter().any(|(net, len)| match (ip, net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => in_v4(a, n.octets(), u32::from(*len)),
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let len = u32::from(*len).min(128);
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(a) & mask == u128::from(*n) & mask
            }
            _ => false,
        });
        if listed {
            Ok(())
        } else {
            Err(why)
        }
    }

    /// Scheme and IP-literal host of a URL (names are checked when resolved).
    fn check_url(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme);
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::BadUrl),
        };
        self.allows(ip).map_err(|why| FetchError::Refused {
            host: ip.to_string(),
            why,
        })
    }
}

/// A refusal, carried through reqwest's error chain to be told apart from other failures.
#[derive(Debug)]
struct Refusal(FetchError);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refusal {}

fn refusal_in(e: &reqwest::Error) -> Option<FetchError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(Refusal(r)) = s.downcast_ref::<Refusal>() {
            return Some(match r {
                FetchError::Refused { host, why } => FetchError::Refused {
                    host: host.clone(),
                    why,
                },
                FetchError::Redirects(n) => FetchError::Redirects(*n),
                FetchError::Scheme => FetchError::Scheme,
                FetchError::Unresolved => FetchError::Unresolved,
                _ => FetchError::Failed,
            });
        }
        source = s.source();
    }
    None
}

/// A rule about which addresses a connection may go to.
pub trait AddressPolicy: Send + Sync + 'static {
    fn allows(&self, ip: IpAddr) -> Result<(), &'static str>;
}

impl AddressPolicy for FetchPolicy {
    fn allows(&self, ip: IpAddr) -> Result<(), &'static str> {
        FetchPolicy::allows(self, ip)
    }
}

/// Resolves with the system resolver, then checks every address: a name cannot be made to
/// point elsewhere between a check and the connection (DNS rebinding).
pub struct Guard<P: AddressPolicy>(pub Arc<P>);

impl<P: AddressPolicy> reqwest::dns::Resolve for Guard<P> {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            type BoxError = Box<dyn std::error::Error + Send + Sync>;
            let refuse = |e: FetchError| -> BoxError { Box::new(Refusal(e)) };
            // `LOCALHOST.` is `localhost`: the resolver must see the name the OS would use.
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| refuse(FetchError::Unresolved))?
                .collect();
            if addrs.is_empty() {
                return Err(refuse(FetchError::Unresolved));
            }
            for a in &addrs {
                if let Err(why) = policy.allows(a.ip()) {
                    return Err(refuse(FetchError::Refused { host, why }));
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An open fetch: the body streams; nothing is held.
pub struct Fetched {
    pub body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
    /// From Content-Length, when given.
    pub size: Option<u64>,
    pub content_type: Option<String>,
    /// From Content-Disposition, else the last path segment of the final URL.
    pub file_name: Option<String>,
}

#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Self {
        let policy = Arc::new(policy);
        let p = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > p.max_redirects {
                return attempt.error(Refusal(FetchError::Redirects(p.max_redirects)));
            }
            match p.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(Refusal(e)),
            }
        });
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(Guard(policy.clone())))
            .redirect(redirects)
            .timeout(policy.timeout)
            .connect_timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .expect("a client without custom TLS builds");
        Self { http, policy }
    }

    /// Starts fetching `url`; the body streams, stopped with an error past the size limit.
    pub async fn open(&self, url: &str) -> Result<Fetched, FetchError> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| FetchError::BadUrl)?;
        self.policy.check_url(&parsed)?;
        let resp = self.http.get(parsed).send().await.map_err(|e| {
            refusal_in(&e).unwrap_or(if e.is_timeout() {
                FetchError::Timeout
            } else {
                FetchError::Failed
            })
        })?;
        if resp.status().is_redirection() {
            // A redirect the client would not follow: to a scheme other than http(s).
            return Err(FetchError::Scheme);
        }
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let max = self.policy.max_size;
        let size = resp.content_length();
        if size.is_some_and(|s| s > max) {
            return Err(FetchError::TooLarge(max));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let file_name = resp
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_name)
            .or_else(|| {
                resp.url()
                    .path_segments()
                    .and_then(|mut s| s.next_back())
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
            });
        let mut seen = 0u64;
        let body = resp.bytes_stream().map(move |c| {
            let c = c.map_err(|e| std::io::Error::other(e.to_string()))?;
            seen += c.len() as u64;
            if seen > max {
                return Err(std::io::Error::other(FetchError::TooLarge(max).to_string()));
            }
            Ok(c)
        });
        Ok(Fetched {
            body: Box::pin(body),
            size,
            content_type,
            file_name,
        })
    }
}

/// `filename*=UTF-8''...` or `filename="..."` of a Content-Disposition.
fn disposition_name(v: &str) -> Option<String> {
    let mut plain = None;
    for part in v.split(';').map(str::trim) {
        if let Some(x) = part.strip_prefix("filename*=") {
            let enc = x.split_once("''").map(|(_, e)| e).unwrap_or(x);
            return Some(
                percent_encoding::percent_decode_str(enc.trim_matches('"'))
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        if let Some(x) = part.strip_prefix("filename=") {
            plain = Some(x.trim_matches('"').to_owned());
        }
    }
    plain.filter(|n| !n.is_empty())
}

/// Where webhooks may be delivered (`--webhook-networks`): the classes `public`, `private`
/// (RFC 1918, unique local IPv6, carrier-grade NAT) and `loopback`, and any CIDRs. Whatever is
/// allowed, link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10,
/// fd00:ec2::254) and the gateway's own listening addresses are refused: a webhook must not
/// read the cloud's credentials or call the gateway's own endpoints.
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    public: bool,
    private: bool,
    loopback: bool,
    nets: Vec<(IpAddr, u8)>,
    /// The gateway's listening addresses (an unspecified address: every local one).
    own: Vec<SocketAddr>,
}

impl Destinations {
    /// Parses `public,private,loopback,10.1.0.0/16,...`.
    pub fn parse(spec: &[String]) -> Result<Self, String> {
        let mut d = Destinations::default();
        for item in spec.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match item {
                "" => {}
                "public" => d.public = true,
                "private" => d.private = true,
                "loopback" => d.loopback = true,
                net => d.nets.push(parse_net(net)?),
            }
        }
        Ok(d)
    }

    /// Today's behaviour: every class.
    pub fn all() -> Self {
        Self {
            public: true,
            private: true,
            loopback: true,
            ..Self::default()
        }
    }

    /// Also refuses the gateway's own listening addresses.
    pub fn with_own(mut self, own: &[SocketAddr]) -> Self {
        self.own.extend_from_slice(own);
        self
    }

    /// Whether a connection to `addr` is allowed; why not, when it is not.
    pub fn allows_addr(&self, addr: SocketAddr) -> Result<(), &'static str> {
        let ip = addr.ip();
        let is_own = self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == ip
                    || (o.ip().is_unspecified() && (ip.is_loopback() || refused(ip).is_some())))
        });
        if is_own {
            return Err("the gateway's own address");
        }
        AddressPolicy::allows(self, ip)
    }

    /// Every address `url` resolves to must be allowed; the addresses, checked.
    pub async fn check_url(&self, url: &url::Url) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
            Some(url::Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
            Some(url::Host::Domain(d)) => {
                let host = d.trim_end_matches('.').to_ascii_lowercase();
                let found = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|_| "Failed to resolve host: Name or service not known".to_owned())?;
                found.collect()
            }
            None => return Err("the URL has no host".into()),
        };
        if addrs.is_empty() {
            return Err("Failed to resolve host: Name or service not known".into());
        }
        for a in &addrs {
            self.allows_addr(*a).map_err(|why| {
                format!("the address {} is {why}, where webhooks may not go", a.ip())
            })?;
        }
        Ok(addrs)
    }
}

/// `addr/len` (or a bare address: the whole length): a network.
pub fn parse_net(net: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = net.split_once('/').unwrap_or((net, ""));
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{net:?} is neither public, private, loopback nor a CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{net:?}: the prefix length is wrong"))?
    };
    Ok((ip, len))
}

fn in_net(ip: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => in_v4(a, n.octets(), u32::from(len)),
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl AddressPolicy for Destinations {
    fn allows(&self, ip: IpAddr) -> Result<(), &'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        // Refused whatever is allowed: link-local (cloud metadata lives there) and the
        // metadata service's IPv6 address.
        let always = match ip {
            IpAddr::V4(v4) => {
                v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()
            }
            IpAddr::V6(v6) => {
                v6.segments()[0] & 0xffc0 == 0xfe80
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                    || v6.is_unspecified()
                    || v6.is_multicast()
            }
        };
        if always {
            return Err("a link-local, metadata or unusable address");
        }
        if self.nets.iter().any(|n| in_net(ip, *n)) {
            return Ok(());
        }
        let class = match (ip, refused(ip)) {
            (_, None) => self.public,
            (ip, _) if ip.is_loopback() => self.loopback,
            (IpAddr::V4(v4), _) if v4.is_private() || in_v4(v4, [100, 64, 0, 0], 10) => {
                self.private
            }
            (IpAddr::V6(v6), _) if v6.segments()[0] & 0xfe00 == 0xfc00 => self.private,
            (_, Some(why)) => return Err(why),
        };
        if class {
            Ok(())
        } else {
            Err(refused(ip).unwrap_or("a public address"))
        }
    }
}

#[cfg(test)]
mod destination_tests {
    use super::*;

    fn d(spec: &str) -> Destinations {
        Destinations::parse(&[spec.to_owned()]).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes_and_networks() {
        let all = d("public,private,loopback");
        for ok in [
            "8.8.8.8",
            "10.0.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "::1",
            "fd12::1",
            "2a00:1450::1",
        ] {
            assert!(all.allows(ip(ok)).is_ok(), "{ok}");
        }
        // Always refused: metadata and link-local, in any spelling, even when listed.
        for no in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(all.allows(ip(no)).is_err(), "{no}");
            assert!(
                d("169.254.0.0/16,fe80::/10").allows(ip(no)).is_err(),
                "{no}"
            );
        }
        let public = d("public");
        assert!(public.allows(ip("8.8.8.8")).is_ok());
        for no in [
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "100.64.0.1",
            "fd12::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(public.allows(ip(no)).is_err(), "{no}");
        }
        let some = d("public,10.1.0.0/16");
        assert!(some.allows(ip("10.1.2.3")).is_ok());
        assert!(some.allows(ip("10.2.0.1")).is_err());
        assert!(d("loopback").allows(ip("8.8.8.8")).is_err());
        assert!(Destinations::parse(&["public,intranet".into()]).is_err());
        assert!(Destinations::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn the_gateways_own_addresses_are_refused() {
        let own: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let all = Destinations::all().with_own(&[own]);
        assert!(all.allows_addr(own).is_err());
        assert!(all.allows_addr("127.0.0.1:8443".parse().unwrap()).is_ok());
        let any = Destinations::all().with_own(&["0.0.0.0:8081".parse().unwrap()]);
        assert!(any.allows_addr("127.0.0.1:8081".parse().unwrap()).is_err());
        assert!(any.allows_addr("10.0.0.5:8081".parse().unwrap()).is_err());
        assert!(any.allows_addr("8.8.8.8:8081".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn urls_are_checked_on_every_address() {
        let public = d("public");
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(public
            .check_url(&url("http://127.0.0.1:9/x"))
            .await
            .is_err());
        assert!(public
            .check_url(&url("http://localhost:9/x"))
            .await
            .is_err());
        assert!(public.check_url(&url("http://[::1]:22/")).await.is_err());
        let all = Destinations::all();
        assert!(all
            .check_url(&url("http://169.254.169.254/latest/meta-data/"))
            .await
            .is_err());
        assert_eq!(
            all.check_url(&url("http://127.0.0.1:9/x")).await.unwrap(),
            vec!["127.0.0.1:9".parse::<SocketAddr>().unwrap()]
        );
    }
}
