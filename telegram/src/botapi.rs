//! The Bot API upstream: `POST {upstream}/bot<token>/<method>` and `/file/bot<token>/<path>`.
//!
//! Errors say whether the request may have reached upstream ([`UpstreamError::forwarded`]):
//! the gateway never invents a 5xx for a call that upstream may have executed, except when
//! upstream stays silent past the call's deadline.

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

impl UpstreamError {
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
    let mut s = if e.is_connect() {
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
    }
    .to_owned();
    let mut src = std::error::Error::source(e);
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
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            max_answer: 128 * 1024 * 1024,
        })
    }

    fn method_url(&self, token: &BotToken, test_env: bool, method: &str, query: &str) -> String {
        let mut url = format!("{}/bot{}/", self.base, token.expose());
        if test_env {
            url.push_str("test/");
        }
        url.push_str(method);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
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
        let verb = if http_method.eq_ignore_ascii_case("GET") {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let url = self.method_url(token, test_env, method, query);
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
