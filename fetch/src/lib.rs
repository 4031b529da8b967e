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

/// Resolves with the system resolver, then checks every address.
struct Guard(Arc<FetchPolicy>);

impl reqwest::dns::Resolve for Guard {
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
