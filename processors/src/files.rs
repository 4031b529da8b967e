//! getFile for any file, of any size (ENHANCED.md, "Files: downloads").
//!
//! A getFile whose file the bot already fetched is answered from the store at once. Otherwise
//! one download starts (concurrent getFiles of the same file share it): the official getFile
//! names the file and it streams from the Bot API's `/file/` path; a file over the Bot API's
//! 20 MB cap ("file is too big") streams from MTProto instead; with `--upstream-local` the
//! local Bot API server's absolute path is read from the shared folder. Bytes go straight
//! into the content-addressed blob store, hashed on the way, never held whole. The answer is
//! the File object with `file_path = <bot_username>/<name>` (name: 128 bits of HMAC under the
//! cluster key) and `file_url`, the token-free link. The first getFile waits (up to
//! `wait`); one that finds the download still running answers 202 with its progress.
//!
//! All of one bot's calls reach one processor (records are keyed by bot), so the map of
//! running downloads can live in memory; after a rebalance the worst case is a second
//! download of the same bytes, which the content address folds into one blob.

use crate::failures::{self, Origin};
use crate::passthrough::{from_answer, time_left};
use crate::Deps;
use futures_util::StreamExt;
use schemas::{ApiError, BotId, BotToken, Call, Envelope, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::blobs::ByteStream;
use store::FileRow;
use telegram::botapi::UpstreamBody;
use telegram::file_id::FileId;
use telegram::mtproto::Mtproto;
use tokio::sync::watch;

/// Bot API getFile answers are small: anything this big is not one.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// Base of `file_url` (`--public-url`), without a trailing slash.
    pub public_url: String,
    /// How long the first getFile of a file waits for its download before answering 202.
    pub wait: Duration,
    /// Largest file the gateway stores.
    pub max_file: u64,
    /// `--upstream-local`: where the local Bot API server keeps its files.
    pub local_dir: Option<PathBuf>,
    /// What URL uploads may fetch.
    pub fetch: fetch::FetchPolicy,
    /// Largest file taken from a URL or an upload.
    pub max_upload: u64,
    /// `--storage-chat-id`: where `upload<Type>` posts files to keep them when there is no
    /// MTProto (every bot must be able to post there).
    pub storage_chat: Option<i64>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8081".into(),
            wait: Duration::from_secs(50),
            max_file: 4000 * 1024 * 1024,
            local_dir: None,
            fetch: fetch::FetchPolicy::default(),
            max_upload: 2000 * 1024 * 1024,
            storage_chat: None,
        }
    }
}

/// A download in progress, watched by every getFile waiting for it.
struct Running {
    downloaded: AtomicU64,
    /// Zero while unknown (MTProto does not say before the last chunk).
    total: AtomicU64,
    done: watch::Sender<Option<Result<FileRow, Response>>>,
}

/// The file service of one processor: running downloads and known bot usernames.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: FilesConfig,
    fetcher: fetch::Fetcher,
    mtproto: Option<Arc<dyn Mtproto>>,
    running: Mutex<HashMap<(BotId, String), Arc<Running>>>,
    usernames: Mutex<HashMap<BotId, String>>,
}

impl Files {
    pub fn new(cfg: FilesConfig, mtproto: Option<Arc<dyn Mtproto>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                fetcher: fetch::Fetcher::new(cfg.fetch.clone()),
                cfg,
                mtproto,
                running: Mutex::new(HashMap::new()),
                usernames: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Files {
    pub fn fetcher(&self) -> &fetch::Fetcher {
        &self.inner.fetcher
    }

    pub fn max_upload(&self) -> u64 {
        self.inner.cfg.max_upload
    }

    /// Whether upstream is a local Bot API server (2000 MB uploads by multipart).
    pub fn local_mode(&self) -> bool {
        self.inner.cfg.local_dir.is_some()
    }

    pub fn storage_chat(&self) -> Option<i64> {
        self.inner.cfg.storage_chat
    }

    pub fn mtproto(&self) -> Option<&Arc<dyn Mtproto>> {
        self.inner.mtproto.as_ref()
    }
}

impl Default for Files {
    fn default() -> Self {
        Self::new(FilesConfig::default(), None)
    }
}

fn json_answer(status: u16, v: &Value) -> Response {
    Response::gateway_json(status, v)
}

/// The File object, with the file_id the bot asked with (ids of one file differ by their
/// file reference; the bot's own is the one it expects back).
fn file_object(cfg: &FilesConfig, row: &FileRow, file_id: &str) -> Response {
    json_answer(
        200,
        &json!({"ok": true, "result": {
            "file_id": file_id,
            "file_unique_id": row.file_unique_id,
            "file_size": row.blob.size,
            "file_path": row.path,
            "file_url": format!("{}/storage/{}", cfg.public_url, row.path),
        }}),
    )
}

fn progress(r: &Running) -> Response {
    let downloaded = r.downloaded.load(Ordering::Relaxed);
    let total = r.total.load(Ordering::Relaxed);
    let mut parameters = json!({"downloaded": downloaded});
    if total > 0 {
        parameters["file_size"] = total.into();
        let p = (downloaded as f64 / total as f64).min(1.0);
        parameters["progress"] = ((p * 100.0).floor() / 100.0).into();
    }
    json_answer(
        202,
        &json!({
            "ok": true,
            "error_code": 202,
            "description": "Your file is currently being downloaded. Please try again later.",
            "parameters": parameters,
        }),
    )
}

/// The enhanced getFile, of an id the codec reads.
pub async fn get_file(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    get: crate::cmd::GetFile,
) -> Response {
    let crate::cmd::GetFile {
        file_id: raw_id,
        fid,
    } = get;
    let bot = env.header.bot_id;
    let unique = fid.unique_id();
    let files = &deps.files.inner;

    match deps.store.file_by_unique_id(bot, &unique).await {
        Ok(Some(row)) => {
            crate::metrics::FILES.with_label_values(&["cached"]).inc();
            store::touch_soon(&deps.store, &row);
            return file_object(&files.cfg, &row, &raw_id);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "file lookup failed; downloading again"),
    }

    let key = (bot, unique.clone());
    let (running, started) = {
        let mut map = files.running.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(r) => (r.clone(), false),
            None => {
                let r = Arc::new(Running {
                    downloaded: AtomicU64::new(0),
                    total: AtomicU64::new(0),
                    done: watch::channel(None).0,
                });
                map.insert(key.clone(), r.clone());
                (r, true)
            }
        }
    };
    if !started {
        crate::metrics::FILES
            .with_label_values(&["in_progress"])
            .inc();
        return progress(&running);
    }
    crate::metrics::FILES.with_label_values(&["download"]).inc();
    let mut done = running.done.subscribe();
    {
        let deps = deps.clone();
        let job = Job {
            token,
            test_env: env.payload.test_env,
            file_id: raw_id.clone(),
            fid,
            unique,
            running: running.clone(),
        };
        let span = tracing::info_span!("download", bot_id = %bot);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = download(&deps, &job).await;
                if let Err(answer) = &result {
                    tracing::warn!(status = answer.status, "download failed");
                }
                job.running.done.send_replace(Some(result));
                deps.files
                    .inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            },
            span,
        ));
    }
    let wait = files.cfg.wait.min(time_left(&env.payload));
    let finished = tokio::time::timeout(wait, async {
        done.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone())
    })
    .await;
    match finished {
        Ok(Some(Ok(row))) => file_object(&files.cfg, &row, &raw_id),
        Ok(Some(Err(answer))) => answer,
        Ok(None) => Response::from_error(&ApiError::internal("the download was lost")),
        Err(_) => progress(&running),
    }
}

/// The bytes of a file id, in the blob store: a file stored before, or downloaded now (the
/// whole way, no 202) as getFile would. For re-typed and renamed re-uploads.
pub(crate) async fn file_of(
    deps: &Deps,
    token: &BotToken,
    test_env: bool,
    file_id: &str,
    fid: &FileId,
) -> Result<FileRow, Response> {
    let unique = fid.unique_id();
    if let Ok(Some(row)) = deps.store.file_by_unique_id(token.bot_id(), &unique).await {
        return Ok(row);
    }
    let job = Job {
        token: token.clone(),
        test_env,
        file_id: file_id.to_owned(),
        fid: fid.clone(),
        unique,
        running: Arc::new(Running {
            downloaded: AtomicU64::new(0),
            total: AtomicU64::new(0),
            done: watch::channel(None).0,
        }),
    };
    download(deps, &job).await
}

struct Job {
    token: BotToken,
    test_env: bool,
    file_id: String,
    fid: FileId,
    unique: String,
    running: Arc<Running>,
}

/// What the official getFile said.
enum Official {
    /// `file_path` (absolute in local mode) and the size, when given.
    Path(String, Option<u64>),
    /// Over the Bot API's download cap: MTProto's turn (upstream's answer, for when
    /// MTProto is off).
    TooBig(Response),
    /// Any other answer: given back to the bot as it came.
    Answer(Response),
}

async fn official_get_file(deps: &Deps, job: &Job) -> Official {
    let body = serde_json::to_vec(&json!({"file_id": job.file_id})).expect("JSON serialises");
    let answer = deps
        .upstream
        .call(
            &job.token,
            job.test_env,
            "POST",
            "getFile",
            "",
            UpstreamBody::Json(body),
            ANSWER_TIMEOUT,
        )
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(error) => return Official::Answer(failures::upstream("getFile")(error).into()),
    };
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if v["ok"] == true {
        if let Some(path) = v["result"]["file_path"].as_str() {
            return Official::Path(path.to_owned(), v["result"]["file_size"].as_u64());
        }
    }
    let description = v["description"].as_str().unwrap_or("");
    let too_big = answer.status == 400 && description.contains("file is too big");
    let answer = from_answer(deps, answer).await;
    if too_big {
        return Official::TooBig(answer);
    }
    Official::Answer(answer)
}

async fn download(deps: &Deps, job: &Job) -> Result<FileRow, Response> {
    let username = username(deps, &job.token, job.test_env).await?;
    let cfg = &deps.files.inner.cfg;
    let (stream, official_path): (ByteStream<'static>, Option<String>) =
        match official_get_file(deps, job).await {
            Official::Answer(a) => return Err(a),
            Official::Path(path, size) => {
                if let Some(s) = size {
                    job.running.total.store(s, Ordering::Relaxed);
                }
                let stream = match &cfg.local_dir {
                    Some(dir) if path.starts_with('/') => local_stream(dir, &path).await?,
                    _ => bot_api_stream(deps, job, &path).await?,
                };
                (stream, Some(path))
            }
            Official::TooBig(answer) => (mtproto_stream(deps, job, answer).await?, None),
        };
    let counted = {
        let running = job.running.clone();
        stream.inspect(move |c| {
            if let Ok(c) = c {
                running
                    .downloaded
                    .fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let blob = deps
        .blobs
        .put(Box::pin(counted), cfg.max_file)
        .await
        .map_err(failures::not_kept(Origin::Telegram))?;
    crate::metrics::FILE_BYTES.inc_by(blob.size);
    let file_name = official_path
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let ext = file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e)
        .filter(|e| e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
        .unwrap_or_default();
    let name = deps.sealer.storage_name(job.token.bot_id(), &job.unique);
    let row = FileRow {
        bot_id: job.token.bot_id(),
        file_unique_id: job.unique.clone(),
        file_id: job.file_id.clone(),
        path: format!("{username}/{name}{ext}"),
        mime_type: Some(mime_for(file_name.as_deref(), &job.fid).to_owned()),
        file_name,
        blob,
        stored_ms: schemas::now_ms(),
    };
    deps.store
        .put_file(&row)
        .await
        .map_err(failures::store("the file could not be recorded"))?;
    Ok(row)
}

async fn bot_api_stream(
    deps: &Deps,
    job: &Job,
    path: &str,
) -> Result<ByteStream<'static>, Response> {
    let resp = deps
        .upstream
        .download(&job.token, job.test_env, path, false, &[])
        .await
        .map_err(failures::upstream("the file download"))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        tracing::warn!(status, "upstream refused the file download");
        return Err(Response::from_error(&ApiError::bad_gateway(format!(
            "upstream answered the file download with {status}"
        ))));
    }
    if let Some(len) = resp.content_length() {
        job.running.total.store(len, Ordering::Relaxed);
    }
    Ok(Box::pin(
        resp.bytes_stream()
            .map(|c| c.map_err(std::io::Error::other)),
    ))
}

/// Without MTProto the official answer stands, as a drop-in gateway must give it.
async fn mtproto_stream(
    deps: &Deps,
    job: &Job,
    official: Response,
) -> Result<ByteStream<'static>, Response> {
    let Some(mtproto) = &deps.files.inner.mtproto else {
        return Err(official);
    };
    let stream = mtproto
        .download(&job.token, &job.fid, 0)
        .await
        .map_err(failures::mtproto("download"))?;
    Ok(Box::pin(stream.map(|c| {
        c.map_err(|e| std::io::Error::other(e.to_string()))
    })))
}

/// A file of the local Bot API server, read from the folder both share. The path must lie
/// inside that folder once resolved: an answer naming anything else is refused.
async fn local_stream(dir: &Path, path: &str) -> Result<ByteStream<'static>, Response> {
    let refuse = |why: &str, error: Option<std::io::Error>| {
        tracing::warn!(path, why, error = ?error, "refusing a local Bot API path");
        Response::from_error(&ApiError::bad_gateway(format!(
            "the local Bot API server named a file {why}"
        )))
    };
    let root = tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| refuse("in a missing --upstream-local folder", Some(e)))?;
    let file = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| refuse("that is not in --upstream-local", Some(e)))?;
    if !file.starts_with(&root) {
        return Err(refuse("outside --upstream-local", None));
    }
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| refuse("that cannot be read", Some(e)))?;
    Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
        f,
        256 * 1024,
    )))
}

/// The bot's username, for its storage paths: getMe once per bot and process. Also the check
/// that a token is good before it is used to sign in over MTProto (Telegram limits
/// `auth.importBotAuthorization` hard; a bad token must not spend it).
pub(crate) async fn username(
    deps: &Deps,
    token: &BotToken,
    test_env: bool,
) -> Result<String, Response> {
    let bot = token.bot_id();
    let known = deps
        .files
        .inner
        .usernames
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&bot)
        .cloned();
    if let Some(u) = known {
        return Ok(u);
    }
    let answer = deps
        .upstream
        .call(
            token,
            test_env,
            "GET",
            "getMe",
            "",
            UpstreamBody::Empty,
            ANSWER_TIMEOUT,
        )
        .await
        .map_err(failures::upstream("getMe"))?;
    let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let Some(name) = schemas::me_username(&v, bot.0) else {
        return Err(from_answer(deps, answer).await);
    };
    deps.files
        .inner
        .usernames
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(bot, name.to_owned());
    crate::outcome::keep_username(deps, bot, name).await;
    Ok(name.to_owned())
}

/// The content type a stored file is served with: from its name, else from its kind.
pub fn mime_for(file_name: Option<&str>, fid: &FileId) -> &'static str {
    let ext = file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    if let Some(m) = ext.as_deref().and_then(schemas::media::mime_by_extension) {
        return m;
    }
    use telegram::file_id::FileType::*;
    match fid.file_type {
        Photo | ProfilePhoto | Thumbnail | Wallpaper => "image/jpeg",
        Voice => "audio/ogg",
        Video | VideoNote | Animation => "video/mp4",
        Audio => "audio/mpeg",
        Sticker => "image/webp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_rounds_down_and_omits_unknown_sizes() {
        let r = Running {
            downloaded: AtomicU64::new(43),
            total: AtomicU64::new(100),
            done: watch::channel(None).0,
        };
        let v: Value = serde_json::from_slice(&progress(&r).body.inline_bytes().unwrap()).unwrap();
        assert_eq!(v["error_code"], 202);
        assert_eq!(v["parameters"]["progress"], 0.43);
        assert_eq!(v["parameters"]["file_size"], 100);
        r.total.store(0, Ordering::Relaxed);
        let v: Value = serde_json::from_slice(&progress(&r).body.inline_bytes().unwrap()).unwrap();
        assert!(v["parameters"].get("progress").is_none());
        assert_eq!(v["parameters"]["downloaded"], 43);
    }

    #[test]
    fn content_types() {
        let doc = FileId::common(telegram::file_id::FileType::Document, 2, vec![], 1, 2);
        assert_eq!(mime_for(Some("a.PDF"), &doc), "application/pdf");
        assert_eq!(mime_for(None, &doc), "application/octet-stream");
        let photo = FileId::photo(2, vec![], 1, 2, b'y');
        assert_eq!(mime_for(Some("file_3"), &photo), "image/jpeg");
    }
}
