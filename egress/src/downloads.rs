//! `/file/bot<token>/<path>`: file downloads streamed from upstream to the client.
//!
//! `Range`, `If-Range`, `If-None-Match` and `If-Modified-Since` go upstream as sent; status,
//! length, range and validator headers come back as upstream sent them, and the body streams
//! through without being held. Each download gets an audit row (method `file`).

use axum::body::Body;
use http::{header, HeaderName, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use schemas::{ApiError, BotToken, CallId, Sealer, Stages};
use std::sync::Arc;
use store::{CallRow, Outcome, Store};
use telegram::botapi::BotApi;

const FORWARDED_REQUEST: &[HeaderName] = &[
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

const FORWARDED_RESPONSE: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
];

#[derive(Clone)]
pub struct Downloads {
    upstream: BotApi,
    store: Arc<dyn Store>,
    sealer: Sealer,
}

fn error_response(e: &ApiError) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(e.to_json()))
        .expect("static headers are valid")
}

impl Downloads {
    pub fn new(upstream: BotApi, store: Arc<dyn Store>, sealer: Sealer) -> Self {
        Self {
            upstream,
            store,
            sealer,
        }
    }

    /// Handles a request whose path starts with `/file/bot`.
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let received_ms = schemas::now_ms();
        let path = req.uri().path();
        let rest = path.strip_prefix("/file/bot").unwrap_or("");
        let (raw_token, file_path) = rest.split_once('/').unwrap_or((rest, ""));
        let token_str = percent_decode_str(raw_token)
            .decode_utf8_lossy()
            .into_owned();
        let Ok(token) = BotToken::parse(&token_str) else {
            return error_response(&ApiError::unauthorized());
        };
        if file_path.is_empty() {
            return error_response(&ApiError::not_found());
        }
        let head = req.method() == http::Method::HEAD;
        if !head && req.method() != http::Method::GET {
            return error_response(&ApiError::method_not_allowed());
        }
        let forwarded: Vec<_> = FORWARDED_REQUEST
            .iter()
            .filter_map(|h| req.headers().get(h).map(|v| (h.clone(), v.clone())))
            .collect();
        let file_path = file_path.to_owned();
        let answer = self
            .upstream
            .download(&token, false, &file_path, head, &forwarded)
            .await;
        let (response, status) = match answer {
            Ok(up) => {
                let status = up.status().as_u16();
                (self.relay(up).await, status)
            }
            Err(error) => {
                tracing::warn!(%error, "file download from upstream failed");
                let e = if error.forwarded() {
                    ApiError::gateway_timeout("upstream did not answer in time")
                } else {
                    ApiError::bad_gateway("upstream is unreachable")
                };
                (error_response(&e), e.status())
            }
        };
        self.audit(&token, &token_str, &file_path, received_ms, status);
        response
    }

    async fn relay(&self, up: reqwest::Response) -> Response<Body> {
        let status = up.status();
        let is_json = up
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("json"));
        if status.as_u16() >= 400 && !is_json {
            // An error page is no use to a Bot API client: give it the shape it knows.
            let reason = status.canonical_reason().unwrap_or("Error");
            return error_response(&ApiError::new(status.as_u16(), reason));
        }
        let mut builder = Response::builder().status(status.as_u16());
        for h in FORWARDED_RESPONSE {
            if let Some(v) = up.headers().get(h) {
                builder = builder.header(h, v);
            }
        }
        builder
            .body(Body::from_stream(up.bytes_stream()))
            .unwrap_or_else(|_| error_response(&ApiError::internal("bad upstream headers")))
    }

    /// Writes the audit row off the request path.
    fn audit(&self, token: &BotToken, raw: &str, file_path: &str, received_ms: i64, status: u16) {
        let mut params = serde_json::Map::new();
        params.insert("file_path".into(), file_path.into());
        let row = CallRow {
            call_id: CallId::new(),
            bot_id: token.bot_id(),
            received_ms,
            token_fingerprint: self.sealer.fingerprint(raw).0,
            method: "file".into(),
            http_method: "GET".into(),
            test_env: false,
            params,
            blobs: Vec::new(),
            outcome: if status < 400 {
                Outcome::Ok
            } else {
                Outcome::Error
            },
            http_status: Some(status),
            error_code: (status >= 400).then_some(status as i64),
            description: None,
            latency_ms: Some((schemas::now_ms() - received_ms).max(0) as u64),
            stages: Stages::default(),
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_call(&row).await {
                tracing::warn!(%error, "could not record a download");
            }
        });
    }
}
