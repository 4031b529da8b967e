//! The sandbox: a fake Telegram Bot API server for tests, benchmarks and offline bot work.
//!
//! It speaks the Bot API over HTTP with the official limits (50 MB multipart uploads, 10 MB
//! photos, 20 MB getFile and URL fetches), keeps one world of bots, chats, messages, files and
//! updates, and records every call it receives. A control API under `/control/` injects
//! updates and faults (429 with retry_after, 5xx, delays, dropped connections) and reads back
//! the recorded calls. Its request parsing is its own, not the gateway's, so a test through
//! the gateway checks the gateway against an independent reading of the request.
//!
//! # Layout
//! - [`Sandbox`], [`SandboxConfig`], [`serve`]: the server (this file).
//! - [`request`]: parsing a Bot API request (query, form, JSON, multipart to disk).
//! - [`world`]: the state: bots, updates, chats, messages, files, recorded calls, faults.
//! - [`methods`]: what each method does.
//! - [`files`]: stored files, file ids, `/file/bot<token>/<path>` with Range.
//! - [`control`]: the control API.

/// The CQL face: a ScyllaDB stand-in (`telepipe sandbox --cql-listen`).
pub use sandbox_cql as cql;
pub mod control;
pub mod files;
pub mod limits;
pub mod methods;
pub mod mtproto;
pub mod mtproto_api;
pub mod request;
pub mod world;

use axum::body::Body;
use axum::Router;
use http::{header, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where uploaded and fetched files are kept.
    pub data_dir: PathBuf,
    /// Largest multipart body (Telegram: 50 MB).
    pub max_upload: u64,
    /// Largest photo (Telegram: 10 MB).
    pub max_photo: u64,
    /// Largest file getFile hands out (Telegram: 20 MB).
    pub max_get_file: u64,
    /// Largest file fetched from a URL (Telegram: 20 MB; photos 5 MB).
    pub max_url_fetch: u64,
    /// Behave as a local Bot API server (`telegram-bot-api --local`): getFile of any size
    /// answers the file's absolute path under `data_dir`.
    pub local: bool,
    /// Master key of the MTProto face; each bot's auth key is derived from it.
    pub mtproto_key: [u8; 32],
    /// Enforce Telegram's flood limits from the start ([`limits`]).
    pub flood_limits: bool,
}

impl SandboxConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            max_upload: 50 * 1024 * 1024,
            max_photo: 10 * 1024 * 1024,
            max_get_file: 20 * 1024 * 1024,
            max_url_fetch: 20 * 1024 * 1024,
            local: false,
            mtproto_key: rand::random(),
            flood_limits: false,
        }
    }
}

#[derive(Clone)]
pub struct Sandbox {
    pub(crate) cfg: Arc<SandboxConfig>,
    pub(crate) world: Arc<world::World>,
    pub(crate) http: reqwest::Client,
    pub(crate) mtproto_keys: Arc<mtproto::Keys>,
    pub(crate) limits: Arc<limits::Limits>,
}

/// A token the sandbox accepts for `bot_id`, the same every run (tests and tools use it).
pub fn token_for(bot_id: i64) -> String {
    let mut secret = format!("AAsandbox{bot_id:x}");
    while secret.len() < 35 {
        secret.push('x');
    }
    format!("{bot_id}:{secret}")
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(cfg.data_dir.join("files"))?;
        std::fs::create_dir_all(cfg.data_dir.join("tmp"))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(std::io::Error::other)?;
        let limits = Arc::new(limits::Limits::default());
        limits.set_enabled(cfg.flood_limits);
        Ok(Self {
            limits,
            cfg: Arc::new(cfg),
            world: Arc::new(world::World::default()),
            http,
            mtproto_keys: Arc::new(mtproto::Keys::default()),
        })
    }

    /// A fresh path for a file being received.
    pub(crate) fn temp_path(&self) -> PathBuf {
        self.cfg
            .data_dir
            .join("tmp")
            .join(format!("{:032x}", rand::random::<u128>()))
    }

    /// The MTProto face's master key (bots' auth keys are derived from it).
    pub fn mtproto_master_key(&self) -> [u8; 32] {
        self.cfg.mtproto_key
    }

    pub fn world(&self) -> &world::World {
        &self.world
    }

    pub fn router(&self) -> Router {
        let me = self.clone();
        Router::new().fallback(move |req: Request<Body>| {
            let me = me.clone();
            async move { me.dispatch(req).await }
        })
    }

    async fn dispatch(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if let Some(rest) = path.strip_prefix("/control/") {
            control::handle(self, rest, req).await
        } else if path.starts_with("/file/bot") {
            files::download(self, req).await
        } else if path.starts_with("/bot") {
            methods::handle(self, req).await
        } else {
            json_response(StatusCode::NOT_FOUND, &methods::error(404, "Not Found"))
        }
    }
}

/// Serves the sandbox on `listener` until `shutdown`.
pub async fn serve(
    sandbox: Sandbox,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "sandbox listening");
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(v).expect("JSON values serialise"),
        ))
        .expect("static headers are valid")
}
