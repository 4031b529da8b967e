//! File downloads: `/file/bot<token>/<path>` and the token-free `/storage/<bot_username>/<name>`.
//!
//! - `/storage/<bot_username>/<name>`: a file getFile stored, from the blob store, no token.
//! - `/file/bot<token>/<bot_username>/<name>`: the same file, where client libraries download
//!   by default; only the bot that owns it gets it (any other token: 404).
//! - `/file/bot<token>/<official path>`: streamed from upstream; a whole `200` answer is
//!   stored while it streams (the storing goes on if the client leaves) and later requests
//!   for the same path are served from the blob store. Ranged or conditional requests of a
//!   path not stored yet go upstream as sent, with status, length, range and validator headers
//!   coming back as upstream sent them.
//!
//! Every download gets an audit row (method `file` or `storage`).

use crate::storage;
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use store::blobs::Blobs;
use store::FileRow;
use tokio::sync::mpsc;

use axum::body::Body;
use http::{header, HeaderName, Request, Response};
use percent_encoding::percent_decode_str;
use schemas::{ApiError, BotId, BotToken, CallId, Sealer, Stages};
use std::sync::Arc;
use store::{CallRow, CallStore, FileStore, Outcome};
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
    /// The files served.
    files: Arc<dyn FileStore>,
    /// The record of each download through the gateway.
    calls: Arc<dyn CallStore>,
    blobs: Arc<dyn Blobs>,
    sealer: Sealer,
}

impl Downloads {
    pub fn new(
        upstream: BotApi,
        files: Arc<dyn FileStore>,
        calls: Arc<dyn CallStore>,
        blobs: Arc<dyn Blobs>,
        sealer: Sealer,
    ) -> Self {
        Self {
            upstream,
            files,
            calls,
            blobs,
            sealer,
        }
    }

    /// A stored file by its path, or `None` (store trouble is logged, and looks like absence).
    async fn stored(&self, path: &str) -> Option<FileRow> {
        match self.files.file_by_path(path).await {
            Ok(Some(r)) => {
                store::touch_soon(&self.files, &r);
                Some(r)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "stored file lookup failed");
                None
            }
        }
    }

    /// Handles `/storage/<bot_username>/<name>`: no token, the unguessable name is the key.
    pub async fn storage(&self, req: Request<Body>) -> Response<Body> {
        let received_ms = schemas::now_ms();
        let raw = req.uri().path().strip_prefix("/storage/").unwrap_or("");
        let path = percent_decode_str(raw).decode_utf8_lossy().into_owned();
        let shaped = path
            .split_once('/')
            .is_some_and(|(user, name)| schemas::valid_username(user) && !name.is_empty());
        let row = if shaped {
            self.stored(&path).await
        } else {
            None
        };
        let Some(row) = row else {
            return ApiError::not_found().into_response();
        };
        let response = storage::serve(self.blobs.as_ref(), &row, req.method(), req.headers()).await;
        self.audit(
            row.bot_id,
            "-".into(),
            "storage",
            &path,
            received_ms,
            response.status().as_u16(),
        );
        response
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
            return ApiError::unauthorized().into_response();
        };
        if file_path.is_empty() {
            return ApiError::not_found().into_response();
        }
        let head = req.method() == http::Method::HEAD;
        if !head && req.method() != http::Method::GET {
            return ApiError::method_not_allowed().into_response();
        }
        let file_path = percent_decode_str(file_path)
            .decode_utf8_lossy()
            .into_owned();
        let bot = token.bot_id();
        let fingerprint = self.sealer.fingerprint(&token_str).0;
        // A getFile path (`<bot_username>/<name>`): this bot's file, or nothing.
        let first = file_path.split('/').next().unwrap_or("");
        let found = if schemas::valid_username(first) {
            self.stored(&file_path).await
        } else {
            None
        };
        let found = match found {
            Some(row) if row.bot_id != bot => {
                self.audit(bot, fingerprint, "file", &file_path, received_ms, 404);
                return ApiError::not_found().into_response();
            }
            Some(row) => Some(row),
            None => self.stored(&official_key(bot, &file_path)).await,
        };
        if let Some(row) = found {
            let response =
                storage::serve(self.blobs.as_ref(), &row, req.method(), req.headers()).await;
            let status = response.status().as_u16();
            self.audit(bot, fingerprint, "file", &file_path, received_ms, status);
            return response;
        }
        let forwarded: Vec<_> = FORWARDED_REQUEST
            .iter()
            .filter_map(|h| req.headers().get(h).map(|v| (h.clone(), v.clone())))
            .collect();
        let whole = forwarded.is_empty() && !head;
        let answer = self
            .upstream
            .download(&token, false, &file_path, head, &forwarded)
            .await;
        let (response, status) = match answer {
            Ok(up) => {
                let status = up.status().as_u16();
                let response = if whole && status == 200 {
                    self.relay_and_store(bot, &file_path, up)
                } else {
                    self.relay(up).await
                };
                (response, status)
            }
            Err(error) => {
                tracing::warn!(%error, "file download from upstream failed");
                let e = ApiError::from(&error);
                let status = e.status();
                (e.into_response(), status)
            }
        };
        self.audit(bot, fingerprint, "file", &file_path, received_ms, status);
        response
    }

    /// Relays a whole file to the client while storing it, so the next request for the path
    /// is served from the blob store. The storing does not depend on the client: one that
    /// leaves early stops receiving, the file is still kept.
    fn relay_and_store(
        &self,
        bot: BotId,
        file_path: &str,
        up: reqwest::Response,
    ) -> Response<Body> {
        let mut builder = Response::builder().status(200);
        for h in FORWARDED_RESPONSE {
            if let Some(v) = up.headers().get(h) {
                builder = builder.header(h, v);
            }
        }
        // A generic type from upstream is improved on from the name where it can be.
        let mime_type = up
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.starts_with("application/octet-stream"))
            .or_else(|| schemas::media::mime_for_name(file_path))
            .map(str::to_owned);
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let tee = up.bytes_stream().then(move |chunk| {
            let tx = tx.clone();
            async move {
                let to_client = match &chunk {
                    Ok(c) => Ok(c.clone()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                // A client that went away just stops getting chunks.
                let _ = tx.send(to_client).await;
                chunk.map_err(std::io::Error::other)
            }
        });
        let (store, blobs) = (self.files.clone(), self.blobs.clone());
        let file_path = file_path.to_owned();
        tokio::spawn(async move {
            let blob = match blobs.put(Box::pin(tee), u64::MAX).await {
                Ok(b) => b,
                Err(error) => {
                    tracing::warn!(%error, "a relayed file was not stored");
                    return;
                }
            };
            let row = FileRow {
                bot_id: bot,
                file_unique_id: format!("path:{file_path}"),
                file_id: String::new(),
                path: official_key(bot, &file_path),
                blob,
                file_name: file_path.rsplit('/').next().map(str::to_owned),
                mime_type,
                stored_ms: schemas::now_ms(),
            };
            if let Err(error) = store.put_file(&row).await {
                tracing::warn!(%error, "a relayed file was not recorded");
            }
        });
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        builder
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| ApiError::internal("bad upstream headers").into_response())
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
            return ApiError::new(status.as_u16(), reason).into_response();
        }
        let mut builder = Response::builder().status(status.as_u16());
        for h in FORWARDED_RESPONSE {
            if let Some(v) = up.headers().get(h) {
                builder = builder.header(h, v);
            }
        }
        builder
            .body(Body::from_stream(up.bytes_stream()))
            .unwrap_or_else(|_| ApiError::internal("bad upstream headers").into_response())
    }

    /// Writes the audit row off the request path.
    fn audit(
        &self,
        bot: BotId,
        token_fingerprint: String,
        method: &str,
        file_path: &str,
        received_ms: i64,
        status: u16,
    ) {
        let mut params = serde_json::Map::new();
        params.insert("file_path".into(), file_path.into());
        let row = CallRow {
            // Made for its arrival, so it sorts with the calls of that moment.
            call_id: CallId::at_ms(received_ms),
            bot_id: bot,
            received_ms,
            token_fingerprint,
            method: method.into(),
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
            // A download is no Bot API call a replay could send again.
            encoding: schemas::Encoding::Query,
            request: None,
            answer_sha256: None,
            answer: None,
        };
        let store = self.calls.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_call(&row).await {
                tracing::warn!(%error, "could not record a download");
            }
        });
    }
}

/// Where a file cached from an official `/file/` path is recorded: never a valid storage path
/// (`:` is not a username character), so `/storage/` cannot reach it.
fn official_key(bot: BotId, file_path: &str) -> String {
    format!("official:{}/{file_path}", bot.0)
}
