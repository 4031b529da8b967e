//! The Bot API upstream: `POST {upstream}/bot<token>/<method>` and `/file/bot<token>/<path>`.
//!
//! Errors say whether the request may have reached upstream ([`UpstreamError::forwarded`]):
//! the gateway never invents a 5xx for a call that upstream may have executed, except when
//! upstream stays silent past the call's deadline.
//!
//! Calls whose body is already bytes (none, JSON, a form, raw) take the hot path: hyper's
//! HTTP/1.1 connections, each driven by the call using it ([`crate::conns`]), which costs
//! about half of reqwest's CPU per call (no URL crate parsing, no redirect and timeout layers,
//! no connection task; measured in `bench/`). Multipart bodies, which stream files,
//! and downloads go through reqwest.

use bytes::Bytes;
use futures_util::StreamExt;
use schemas::BotToken;
use std::time::Duration;

/// What the client sent, re-encoded in the same way.
pub enum UpstreamBody {
    Empty,
    Json(Vec<u8>),
    Form(String),
    Multipart(reqwest::multipart::Form),
    Raw { content_type: String, data: Bytes },
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: the request never left.
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The request went out and no complete answer came back in time.
    #[error("upstream did not answer in time")]
    Timeout,
    /// The request went out and the answer broke off or was too large.
    #[error("upstream answer failed: {0}")]
    Answer(String),
    /// Sending the request body failed (a blob could not be read, say).
    #[error("request to upstream failed: {0}")]
    Request(String),
}

/// The Bot API error an upstream failure is, wherever it is met (a call, getFile, a
/// download): the bot learns whether upstream was out of reach, slow, or broke off.
impl From<&UpstreamError> for schemas::ApiError {
    fn from(e: &UpstreamError) -> Self {
        use schemas::ApiError;
        match e {
            UpstreamError::Connect(_) => ApiError::bad_gateway("upstream is unreachable"),
            UpstreamError::Timeout => ApiError::gateway_timeout("upstream did not answer in time"),
            UpstreamError::Answer(_) => ApiError::bad_gateway("upstream's answer broke off"),
            UpstreamError::Request(_) => ApiError::bad_gateway("the request to upstream failed"),
        }
    }
}

impl UpstreamError {
    /// The failure's label in metrics (`telepipe_upstream_requests_total`'s `outcome`).
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "unreachable",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Answer(_) | UpstreamError::Request(_) => "failed",
        }
    }

    /// Whether upstream may have acted on the request.
    pub fn forwarded(&self) -> bool {
        !matches!(self, UpstreamError::Connect(_))
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_connect() {
            UpstreamError::Connect(short(&e))
        } else if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_body() || e.is_decode() {
            UpstreamError::Answer(short(&e))
        } else {
            UpstreamError::Request(short(&e))
        }
    }
}

/// A reqwest error without its URL (the URL carries the token): its kind, then the chain of
/// underlying causes, which never hold the URL.
fn short(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() {
        "body error"
    } else if e.is_decode() {
        "decode error"
    } else if e.is_request() {
        "request error"
    } else {
        "error"
    };
    chain(what, e)
}

/// `what`, then the chain of underlying causes (none of which holds the URL).
pub(crate) fn chain(what: &str, e: &dyn std::error::Error) -> String {
    let mut s = what.to_owned();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// An upstream answer, complete.
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    /// The hot path's connections (see the module docs).
    fast: std::sync::Arc<crate::conns::Conns>,
    /// `base` parsed once for the hot path: where its connections go, and the path the Bot
    /// API's own paths follow (empty for `https://api.telegram.org`). `None` when hyper will
    /// not take the base: every call then goes the reqwest way.
    fast_base: Option<std::sync::Arc<(crate::conns::Origin, String)>>,
    base: String,
    max_answer: usize,
}

impl BotApi {
    /// `base` is the upstream root, e.g. `https://api.telegram.org`.
    pub fn new(base: &str, connect_timeout: Duration) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Request(short(&e)))?;
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.enforce_http(false);
        // HTTP/1.1 only: the hot path's connections speak it (`conns`).
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let fast = std::sync::Arc::new(crate::conns::Conns::new(tls));
        let base = base.trim_end_matches('/').to_owned();
        // A base with a query or a fragment is none a path can follow: such a (broken) base
        // goes the reqwest way for every call, as multipart calls do, so both ways agree.
        let fast_base = http::Uri::try_from(base.as_str())
            .ok()
            .filter(|_| !base.contains(['?', '#']))
            .and_then(|uri| {
                let origin = crate::conns::Origin::of(&uri).ok()?;
                let prefix = uri.path().trim_end_matches('/').to_owned();
                Some(std::sync::Arc::new((origin, prefix)))
            });
        Ok(Self {
            http,
            fast,
            fast_base,
            base,
            max_answer: 128 * 1024 * 1024,
        })
    }

    /// A method's path after the base: `/bot<token>/[test/]<method>[?<query>]`.
    fn method_path(token: &BotToken, test_env: bool, method: &str, query: &str) -> String {
        let mut path = format!("/bot{}/", token.expose());
        if test_env {
            path.push_str("test/");
        }
        path.push_str(method);
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        path
    }

    /// The whole URL of a method's path, for the reqwest way.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls a Bot API method and reads the whole answer (answers are JSON, bounded).
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        token: &BotToken,
        test_env: bool,
        http_method: &str,
        method: &str,
        query: &str,
        body: UpstreamBody,
        timeout: Duration,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        crate::sent::mark();
        let verb = if http_method.eq_ignore_ascii_case("GET") {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let path = Self::method_path(token, test_env, method, query);
        let body = match body {
            UpstreamBody::Multipart(form) => {
                let url = self.url(&path);
                return Box::pin(self.call_slow(verb, url, UpstreamBody::Multipart(form), timeout))
                    .await;
            }
            UpstreamBody::Empty => (None, Bytes::new()),
            UpstreamBody::Json(b) => (Some("application/json"), Bytes::from(b)),
            UpstreamBody::Form(s) => (Some("application/x-www-form-urlencoded"), Bytes::from(s)),
            UpstreamBody::Raw { content_type, data } => {
                let Ok(ct) = http::HeaderValue::from_str(&content_type) else {
                    let body = UpstreamBody::Raw { content_type, data };
                    let url = self.url(&path);
                    return Box::pin(self.call_slow(verb, url, body, timeout)).await;
                };
                return self.call_fast(verb, path, Some(ct), data, timeout).await;
            }
        };
        let ct = body.0.map(http::HeaderValue::from_static);
        self.call_fast(verb, path, ct, body.1, timeout).await
    }

    /// The hot path: hyper's client, `path` (after the base) on the wire as it is. A path
    /// `http::Uri` will not take (a method name with characters a URL must escape), or a base
    /// it would not, goes the reqwest way, which escapes them.
    async fn call_fast(
        &self,
        verb: reqwest::Method,
        path: String,
        content_type: Option<http::HeaderValue>,
        data: Bytes,
        timeout: Duration,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let fast = self.fast_base.as_deref().and_then(|(origin, prefix)| {
            let wire = if prefix.is_empty() {
                http::Uri::try_from(path.as_str())
            } else {
                http::Uri::try_from(format!("{prefix}{path}"))
            };
            wire.ok().map(|wire| (origin, wire))
        });
        let Some((origin, wire)) = fast else {
            let body = match content_type {
                None => UpstreamBody::Empty,
                Some(ct) => UpstreamBody::Raw {
                    content_type: ct.to_str().unwrap_or_default().to_owned(),
                    data,
                },
            };
            let url = self.url(&path);
            return Box::pin(self.call_slow(verb, url, body, timeout)).await;
        };
        let exchange = self
            .fast
            .exchange(origin, verb, &wire, content_type, data, self.max_answer);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(a)) => Ok(UpstreamAnswer {
                status: a.status,
                content_type: a
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: a.body,
            }),
            Ok(Err(crate::conns::Failure::Connect(e))) => Err(UpstreamError::Connect(e)),
            Ok(Err(crate::conns::Failure::Request(e))) => Err(UpstreamError::Request(e)),
            Ok(Err(crate::conns::Failure::Answer(e))) => Err(UpstreamError::Answer(e)),
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// Through reqwest: multipart bodies (they stream files), and URLs hyper will not take.
    async fn call_slow(
        &self,
        verb: reqwest::Method,
        url: String,
        body: UpstreamBody,
        timeout: Duration,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let mut req = self.http.request(verb, url).timeout(timeout);
        req = match body {
            UpstreamBody::Empty => req,
            UpstreamBody::Json(b) => req.header("content-type", "application/json").body(b),
            UpstreamBody::Form(s) => req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(s),
            UpstreamBody::Multipart(form) => req.multipart(form),
            UpstreamBody::Raw { content_type, data } => {
                req.header("content-type", content_type).body(data)
            }
        };
        let resp = req.send().await.map_err(UpstreamError::from_reqwest)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(UpstreamError::from_reqwest)?;
            if body.len() + chunk.len() > self.max_answer {
                return Err(UpstreamError::Answer("answer too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamAnswer {
            status,
            content_type,
            body: Bytes::from(body),
        })
    }

    /// Starts a file download; the caller streams the body. `headers` are forwarded as given
    /// (Range, If-None-Match, If-Modified-Since).
    pub async fn download(
        &self,
        token: &BotToken,
        test_env: bool,
        path: &str,
        head: bool,
        headers: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut url = format!("{}/file/bot{}/", self.base, token.expose());
        if test_env {
            url.push_str("test/");
        }
        url.push_str(path);
        let verb = if head {
            reqwest::Method::HEAD
        } else {
            reqwest::Method::GET
        };
        let mut req = self.http.request(verb, url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.map_err(UpstreamError::from_reqwest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server saw of a request: its request line, its `Host`, and whether it came
    /// the hot path's way (hyper's connection sends no `accept`; reqwest sends `*/*`).
    type Head = (String, String, bool);

    /// A server that answers every request `{"ok":true}` and sends each request's [`Head`]
    /// back over the channel.
    async fn server() -> (String, tokio::sync::mpsc::UnboundedReceiver<Head>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                            .unwrap_or_default()
                            .to_owned();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(str::to_owned)
                            })
                            .and_then(|n| n.trim().parse().ok())
                            .unwrap_or(0);
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        while buf.len() < end + length {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + length);
                        let fast = !head.to_ascii_lowercase().contains("\r\naccept:");
                        let _ = tx.send((line, host, fast));
                        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                        if s.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    const TOKEN: &str = "123:AAsandbox1e240xxxxxxxxxxxxxxxxxxxxx";

    /// The hot path puts the method's path after the base's own path (the token in it), the
    /// host and port in `Host`; a method name a URL must escape goes the reqwest way, escaped,
    /// and so does every call when the base has a query.
    #[tokio::test]
    async fn requests_go_where_the_base_says() {
        let (root, mut heads) = server().await;
        let host = root.trim_start_matches("http://").to_owned();
        let token = BotToken::parse(TOKEN).unwrap();
        let call = |api: BotApi, test_env: bool, method: &'static str, query: &'static str| {
            let token = token.clone();
            async move {
                let body = UpstreamBody::Json(b"{\"chat_id\":1}".to_vec());
                let a = api
                    .call(
                        &token,
                        test_env,
                        "POST",
                        method,
                        query,
                        body,
                        Duration::from_secs(5),
                    )
                    .await
                    .expect("answered");
                assert_eq!((a.status, &a.body[..]), (200, &b"{\"ok\":true}"[..]));
            }
        };
        let plain = BotApi::new(&format!("{root}/"), Duration::from_secs(5)).unwrap();
        call(plain.clone(), false, "sendMessage", "a=1").await;
        assert_eq!(
            heads.recv().await.unwrap(),
            (
                format!("POST /bot{TOKEN}/sendMessage?a=1 HTTP/1.1"),
                host.clone(),
                true
            )
        );
        call(plain.clone(), true, "getMe", "").await;
        assert_eq!(
            heads.recv().await.unwrap(),
            (
                format!("POST /bot{TOKEN}/test/getMe HTTP/1.1"),
                host.clone(),
                true
            )
        );
        let prefixed = BotApi::new(&format!("{root}/tg/api/"), Duration::from_secs(5)).unwrap();
        call(prefixed, false, "getMe", "").await;
        assert_eq!(
            heads.recv().await.unwrap(),
            (
                format!("POST /tg/api/bot{TOKEN}/getMe HTTP/1.1"),
                host.clone(),
                true
            )
        );
        call(plain, false, "get Me", "").await;
        assert_eq!(
            heads.recv().await.unwrap(),
            (format!("POST /bot{TOKEN}/get%20Me HTTP/1.1"), host, false)
        );
        let queried = BotApi::new(&format!("{root}/?k=v"), Duration::from_secs(5)).unwrap();
        assert!(queried.fast_base.is_none());
    }
}
