//! Uploads the gateway takes over (ENHANCED.md, "Files: uploads"), for the single-file send
//! methods: a file given as an `http(s)` URL, a multipart file over the Bot API's limits
//! (50 MB, 10 MB for photos), or any file with `file_name`.
//!
//! A URL is fetched by the gateway — not by Telegram, whose URL limits are 20 MB (5 MB for
//! photos) — through the SSRF-safe [`fetch`] crate, streamed into the blob store; an uploaded
//! part is in the blob store already. Then:
//! - within the Bot API's multipart limits, or with a local Bot API server (2000 MB): the call
//!   goes upstream as multipart with the file as a part (renamed when `file_name` says so);
//! - larger: uploaded over MTProto as the bot (`messages.uploadMedia` to itself) and the call
//!   goes upstream with the resulting file_id, so the answer is the Bot API's own Message.
//!
//! `file_name` is the gateway's parameter: it names the file and is not sent upstream. Other
//! parts of a multipart call (a thumbnail, say) go upstream as they came.
//!
//! Metadata: the file is read by libmediainfo ([`media`]) and what the request lacks (a
//! video's width, height, duration, streaming; an audio's duration, performer, title; ...) is
//! added; what the request gives wins. `sendFile` and `uploadFile` take any file and choose the
//! kind from its content ([`media::detect`]).
//!
//! Dedupe: what Telegram answered for an upload is remembered by (bot, sha256, kind, name);
//! the same file sent again the same way goes by that file_id, with no second upload. A
//! cached file_id that stops working is forgotten and the file uploaded again.
//!
//! `upload<Type>` and `uploadFile` keep a file without sending it to anybody: over MTProto
//! (`messages.uploadMedia` to the bot itself), or, without MTProto, by posting it to the
//! `--storage-chat-id` chat, taking the file_id and deleting the message.

use crate::cmd::{Command, SendTarget, UploadOnly};
use crate::failures::{self, Origin};
use crate::Deps;
use schemas::{
    ApiError, BlobRef, BotToken, Call, CallBody, Envelope, MediaKind, Part, Response, Staged,
};
use serde_json::Value;
use telegram::file_id::{FileId, FileType};
use telegram::mtproto::{tl, NewMedia, StoredMedia};

/// The file parameter of each single-file send method.
pub fn file_param(method: &str) -> Option<&'static str> {
    MediaKind::of_send_method(method).map(MediaKind::param)
}

/// The gateway's `sendFile`: any file, sent as the kind its content says.
pub fn is_send_file(method: &str) -> bool {
    method.eq_ignore_ascii_case("sendFile")
}

pub(crate) fn is_url(v: &str) -> bool {
    let v = v.trim_start().to_ascii_lowercase();
    v.starts_with("http://") || v.starts_with("https://")
}

/// The uploaded part named `param`, if the call is multipart and has one.
pub(crate) fn file_part<'a>(
    call: &'a Call,
    param: &str,
) -> Option<(&'a BlobRef, Option<&'a str>, Option<&'a str>)> {
    let CallBody::Multipart { parts } = &call.body else {
        return None;
    };
    parts.iter().find_map(|p| match p {
        Part::File {
            name,
            blob,
            file_name,
            content_type,
        } if name == param => Some((blob, file_name.as_deref(), content_type.as_deref())),
        _ => None,
    })
}

/// The file types a send method takes as a file_id (sendDocument: documents only, though
/// other types without a send method of their own are sent as documents when re-typed).
fn accepts(method: &str, t: FileType) -> bool {
    MediaKind::of_send_method(method).is_none_or(|k| match k {
        MediaKind::Document => matches!(t, FileType::Document | FileType::DocumentAsFile),
        k => t.sent_as() == k,
    })
}

/// A file_id given for a method that does not take its type, or with `file_name`: the file
/// must be downloaded and uploaded again, as asked.
pub(crate) fn retyped(method: &str, value: &str, renamed: bool) -> Option<FileId> {
    let fid = FileId::decode(value).ok()?;
    (renamed || !accepts(method, fid.file_type)).then_some(fid)
}

/// Whether the gateway must handle this send itself (a URL, an oversized part, a rename).
pub fn takes_over(call: &Call) -> bool {
    if is_send_file(&call.method) {
        return true;
    }
    let Some(method) = schemas::catalogue::canonical(&call.method) else {
        return false;
    };
    let Some(param) = file_param(method) else {
        return false;
    };
    let params = call.params();
    if let Some(v) = params.get(param).and_then(Value::as_str) {
        if is_url(v) || retyped(method, v, params.contains_key("file_name")).is_some() {
            return true;
        }
    }
    // Every uploaded file: the dedupe cache may already know it.
    file_part(call, param).is_some()
}

/// The Bot API's multipart limit for a method's file.
pub(crate) fn bot_api_limit(method: &str) -> u64 {
    kind_limit(MediaKind::of_send_method(method).unwrap_or(MediaKind::Document))
}

/// The Bot API's multipart limit for a file sent as `kind`.
pub(crate) fn kind_limit(kind: MediaKind) -> u64 {
    if kind == MediaKind::Photo {
        10 * 1024 * 1024
    } else {
        50 * 1024 * 1024
    }
}

/// A parameter's value as a multipart text part carries it.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The file to send: where its bytes are, its name and type.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) blob: BlobRef,
    pub(crate) file_name: String,
    pub(crate) content_type: Option<String>,
}

impl Source {
    /// What makes this file sent as `kind` by `bot_id` the same as an earlier send.
    pub(crate) fn key(
        &self,
        bot_id: schemas::BotId,
        kind: MediaKind,
        renamed: Option<String>,
    ) -> store::UploadKey {
        store::UploadKey {
            bot_id,
            sha256: self.blob.sha256.clone(),
            kind,
            file_name: renamed.unwrap_or_else(|| self.file_name.clone()),
        }
    }
}

impl From<Source> for schemas::FoundFile {
    fn from(s: Source) -> Self {
        Self {
            blob: s.blob,
            file_name: s.file_name,
            content_type: s.content_type,
        }
    }
}

impl From<schemas::FoundFile> for Source {
    fn from(f: schemas::FoundFile) -> Self {
        Self {
            blob: f.blob,
            file_name: f.file_name,
            content_type: f.content_type,
        }
    }
}

async fn fetch_url(deps: &Deps, url: &str) -> Result<Source, Response> {
    let fetched = deps
        .files
        .fetcher()
        .open(url)
        .await
        .map_err(|e| failures::url(&e))?;
    keep_fetched(deps, fetched).await
}

/// Streams a fetched body into the blob store.
pub(crate) async fn keep_fetched(deps: &Deps, fetched: fetch::Fetched) -> Result<Source, Response> {
    let file_name = fetched.file_name.clone().unwrap_or_else(|| "file".into());
    let content_type = fetched.content_type.clone();
    let body = crate::progress::Progress::new(fetched.body, "fetch", fetched.size.unwrap_or(0));
    let blob = deps
        .blobs
        .put(Box::pin(body), deps.files.max_upload())
        .await
        .map_err(failures::not_kept(Origin::Url))?;
    Ok(Source {
        blob,
        file_name,
        content_type,
    })
}

/// The file a call names under `param`: fetched from a URL, an uploaded part, or — for a send
/// `method` given a file_id it must re-type (or rename) — the file_id's bytes. `None`: none of
/// these (a plain file_id, nothing for the gateway to do).
async fn source_of(
    deps: &Deps,
    token: &schemas::BotToken,
    call: &Call,
    param: &str,
    method: Option<&str>,
    renamed: bool,
) -> Result<Option<Source>, Response> {
    let value = call
        .params()
        .get(param)
        .and_then(Value::as_str)
        .map(str::to_owned);
    source_from(deps, token, call, value.as_deref(), param, method, renamed).await
}

/// The file a `value` names (a URL, `attach://<part>`, a file_id to re-type or rename), or
/// else the call's uploaded part `part`.
pub(crate) async fn source_from(
    deps: &Deps,
    token: &schemas::BotToken,
    call: &Call,
    value: Option<&str>,
    part: &str,
    method: Option<&str>,
    renamed: bool,
) -> Result<Option<Source>, Response> {
    if let Some(url) = value.filter(|v| is_url(v)) {
        return fetch_url(deps, url).await.map(Some);
    }
    let part = value
        .and_then(|v| v.strip_prefix("attach://"))
        .unwrap_or(part);
    let retype = method
        .zip(value)
        .and_then(|(m, id)| retyped(m, id, renamed));
    if let (Some(fid), Some(id)) = (retype, value) {
        let row = crate::files::file_of(deps, token, call.test_env, id, &fid).await?;
        return Ok(Some(Source {
            blob: row.blob,
            file_name: row.file_name.unwrap_or_else(|| "file".into()),
            content_type: row.mime_type,
        }));
    }
    Ok(file_part(call, part).map(|(blob, name, ctype)| Source {
        blob: blob.clone(),
        file_name: name.unwrap_or("file").to_owned(),
        content_type: ctype.map(str::to_owned),
    }))
}

/// The call's parts without `param` and `file_name`, plus `extra` (metadata the request
/// lacked) and `file`; a call that was not multipart becomes multipart from its parameters.
fn parts_with(call: &Call, param: &str, extra: &[(&'static str, String)], file: Part) -> Vec<Part> {
    let dropped = |n: &str| n == param || n == "file_name";
    let mut out: Vec<Part> = match &call.body {
        CallBody::Multipart { parts } => parts
            .iter()
            .filter(|p| match p {
                Part::Text { name, .. } | Part::File { name, .. } => !dropped(name),
            })
            .cloned()
            .collect(),
        _ => call
            .params()
            .iter()
            .filter(|(k, _)| !dropped(k))
            .map(|(k, v)| Part::Text {
                name: k.clone(),
                value: text(v),
            })
            .collect(),
    };
    // Query parameters of a multipart call are sent along as parts, so none is lost.
    if matches!(call.body, CallBody::Multipart { .. }) {
        for (k, v) in form_urlencoded::parse(call.query.as_bytes()) {
            if !dropped(&k) && !out.iter().any(|p| matches!(p, Part::Text { name, .. } | Part::File { name, .. } if *name == k)) {
                out.push(Part::Text {
                    name: k.into_owned(),
                    value: v.into_owned(),
                });
            }
        }
    }
    out.extend(extra.iter().map(|(k, v)| Part::Text {
        name: (*k).to_owned(),
        value: v.clone(),
    }));
    out.push(file);
    out
}

/// What the file says about itself (libmediainfo), read from the blob store. A file it cannot
/// read is a document with nothing to add; that never fails the send.
pub(crate) async fn probe(deps: &Deps, blob: &BlobRef) -> media::Metadata {
    let started = std::time::Instant::now();
    let read = media::probe(blob.size, |at| {
        let blobs = deps.blobs.clone();
        let blob = blob.clone();
        async move {
            blobs
                .open_at(&blob, at)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
    })
    .await;
    match read {
        Ok(m) => {
            tracing::debug!(ms = started.elapsed().as_millis() as u64, format = ?m.format, "media metadata read");
            m
        }
        Err(error) => {
            tracing::warn!(%error, "media metadata could not be read");
            media::Metadata {
                size: blob.size,
                ..Default::default()
            }
        }
    }
}

/// The metadata parameters of a `kind` the request does not give itself.
fn missing_metadata(
    meta: &media::Metadata,
    kind: MediaKind,
    params: &serde_json::Map<String, Value>,
) -> Vec<(&'static str, String)> {
    meta.params_for(kind)
        .into_iter()
        .filter(|(k, _)| params.get(*k).is_none_or(|v| v.is_null() || v == ""))
        .collect()
}

/// The request's parameters with the file's metadata added where missing.
fn with_metadata(
    params: &serde_json::Map<String, Value>,
    extra: &[(&'static str, String)],
) -> serde_json::Map<String, Value> {
    let mut p = params.clone();
    for (k, v) in extra {
        p.insert((*k).to_owned(), Value::String(v.clone()));
    }
    p
}

/// A content type worth passing on: the one given (unless it is the say-nothing
/// octet-stream), else the one the content has.
fn content_type(given: Option<String>, meta: &media::Metadata) -> Option<String> {
    given
        .filter(|c| !c.eq_ignore_ascii_case("application/octet-stream"))
        .or_else(|| meta.mime_type().map(str::to_owned))
}

/// The same call as another method, with another body (the gateway's own calls upstream).
pub(crate) fn as_call(env: &Envelope<Call>, method: &str, body: CallBody) -> Envelope<Call> {
    let mut call = env.payload.clone();
    call.method = method.to_owned();
    call.body = body;
    call.query = String::new();
    call.http_method = "POST".into();
    Envelope {
        header: env.header.clone(),
        payload: call,
    }
}

/// How one file goes upstream in a send.
pub(crate) enum Prepared {
    /// As an uploaded part, with the metadata parameters the request lacked.
    Part(Part, Vec<(&'static str, String)>),
    /// By file_id: uploaded over MTProto just now, or (`deduped`) sent before.
    Id { file_id: String, deduped: bool },
}

/// What the gateway does with one file to send as `kind`: its cached file_id (when `use_cache`
/// and the bot sent the same before), else an uploaded part named `part_name` within the Bot
/// API's limits (or with a local Bot API server), else an MTProto upload. `given` are the
/// request's own parameters for this file, which win over its metadata.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepare(
    deps: &Deps,
    token: &schemas::BotToken,
    test_env: bool,
    source: &Source,
    key: &store::UploadKey,
    given: &serde_json::Map<String, Value>,
    part_name: &str,
    meta: Option<media::Metadata>,
    use_cache: bool,
) -> Result<Prepared, Response> {
    if use_cache {
        match deps.store.cached_upload(key).await {
            Ok(Some(file_id)) => {
                return Ok(Prepared::Id {
                    file_id,
                    deduped: true,
                })
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "dedupe cache lookup failed; uploading"),
        }
    }
    let meta = match meta {
        Some(m) => m,
        None => probe(deps, &source.blob).await,
    };
    let kind = key.kind;
    let extra = missing_metadata(&meta, kind, given);
    let ctype = content_type(source.content_type.clone(), &meta);
    if source.blob.size <= kind_limit(kind) || deps.files.local_mode() {
        crate::metrics::UPLOADS
            .with_label_values(&["multipart"])
            .inc();
        let part = Part::File {
            name: part_name.to_owned(),
            file_name: Some(key.file_name.clone()),
            content_type: ctype,
            blob: source.blob.clone(),
        };
        return Ok(Prepared::Part(part, extra));
    }
    let media = media_for(
        kind,
        &with_metadata(given, &extra),
        mime_or_default(ctype),
        key.file_name.clone(),
    );
    let stored = mtproto_upload(deps, token, test_env, &source.blob, &key.file_name, media).await?;
    Ok(Prepared::Id {
        file_id: stored.file_id.encode(),
        deduped: false,
    })
}

/// After a send with prepared files: a success caches what was uploaded and counts what went
/// by cache; a failure forgets cached ids that were used (a file_id Telegram no longer takes),
/// and says whether sending again without them is worth it.
pub(crate) async fn settle(
    deps: &Deps,
    answer: &Response,
    sent: &[(store::UploadKey, bool, Option<String>)],
) -> bool {
    if crate::gate::refused() {
        // Another run of the call got there first: nothing was sent, and nothing is learnt.
        return false;
    }
    if answer.status == 200 {
        for (key, deduped, file_id) in sent {
            if *deduped {
                crate::metrics::UPLOADS
                    .with_label_values(&["deduped"])
                    .inc();
            } else if let Some(file_id) = file_id {
                if let Err(error) = deps.store.put_upload(key, file_id).await {
                    tracing::warn!(%error, "could not cache an upload");
                }
            }
        }
        return false;
    }
    let used: Vec<_> = sent.iter().filter(|(_, deduped, _)| *deduped).collect();
    for (key, ..) in &used {
        tracing::info!(
            status = answer.status,
            "a cached upload no longer works; uploading again"
        );
        if let Err(error) = deps.store.forget_upload(key).await {
            tracing::warn!(%error, "could not forget a cached upload");
        }
    }
    !used.is_empty()
}

/// The file a send or an upload names, found (a URL fetched, an uploaded part, a file_id's
/// bytes) and kept in the blob store: the files stage's part. `Err`: the call's answer, made
/// here (a URL refused; an upload of a file_id already of its kind, or of nothing).
pub(crate) async fn find(
    deps: &Deps,
    env: &Envelope<Call>,
    token: &BotToken,
    command: &Command,
) -> Result<Staged, Response> {
    let call = &env.payload;
    let params = call.params();
    let renamed = params.get("file_name").map(text).filter(|n| !n.is_empty());
    let found = |source: Source| Staged {
        file: Some(source.into()),
        ..Default::default()
    };
    match command {
        Command::Send(target) => {
            let (method, detect, param) = (target.method, target.kind.is_none(), target.param());
            let from_part = !params
                .get(param)
                .and_then(Value::as_str)
                .is_some_and(is_url);
            let oversized =
                file_part(call, param).is_some_and(|(b, ..)| b.size > bot_api_limit(method));
            if !detect
                && from_part
                && oversized
                && deps.files.mtproto().is_none()
                && !deps.files.local_mode()
            {
                // Nothing the gateway can add: upstream's own answer (413) stands, as without
                // it.
                return Ok(Staged::default());
            }
            let source =
                source_of(deps, token, call, param, Some(method), renamed.is_some()).await?;
            Ok(source.map(found).unwrap_or_default())
        }
        Command::UploadOnly(UploadOnly { param, kind }) => {
            if deps.files.mtproto().is_none() && deps.files.storage_chat().is_none() {
                return Err(Response::from_error(&ApiError::bad_request(
                    "upload methods need MTProto (TELEGRAM_API_ID and TELEGRAM_API_HASH) or a storage chat (--storage-chat-id)",
                )));
            }
            let retype_as = kind.map_or("sendFile", MediaKind::send_method);
            match source_of(deps, token, call, param, Some(retype_as), renamed.is_some()).await? {
                Some(source) => Ok(found(source)),
                // A file_id already of the kind asked: nothing to upload, it is kept already.
                None => Err(
                    match params
                        .get(*param)
                        .and_then(Value::as_str)
                        .map(FileId::decode)
                    {
                        Some(Ok(fid)) => upload_answer(&fid, None),
                        Some(Err(_)) => Response::from_error(&ApiError::bad_request(
                            "wrong file identifier/HTTP URL specified",
                        )),
                        None => Response::from_error(&ApiError::bad_request(format!(
                            "there is no {param} in the request"
                        ))),
                    },
                ),
            }
        }
        // No other command is staged ([`Command::after`]).
        _ => Ok(Staged::default()),
    }
}

/// What the media stage adds to a found file: its metadata (libmediainfo, read from the blob
/// store by ranges) and, where the call left the kind to the gateway, the kind. A file the bot
/// sent as the same kind before is not read: its cached file_id goes instead (the send stage
/// reads it after all if that id no longer works).
pub(crate) async fn read(deps: &Deps, env: &Envelope<Call>, command: &Command) -> Staged {
    let mut staged = env.payload.staged.as_deref().cloned().unwrap_or_default();
    let Some(file) = staged.file.clone() else {
        return staged;
    };
    let fixed = match command {
        Command::Send(target) => target.kind,
        Command::UploadOnly(upload) => upload.kind,
        _ => return staged,
    };
    let source = Source::from(file);
    let meta = match fixed {
        Some(kind) => {
            let renamed = env
                .payload
                .params()
                .get("file_name")
                .map(text)
                .filter(|n| !n.is_empty());
            let key = source.key(env.header.bot_id, kind, renamed);
            if matches!(deps.store.cached_upload(&key).await, Ok(Some(_))) {
                return staged;
            }
            probe(deps, &source.blob).await
        }
        None => {
            let (kind, m) = read_kind(deps, &source.blob).await;
            staged.kind = Some(kind);
            m
        }
    };
    staged.meta = Some(meta);
    staged
}

/// A file read and its kind decided from what it is (`sendFile`, `uploadFile`).
async fn read_kind(deps: &Deps, blob: &BlobRef) -> (MediaKind, media::Metadata) {
    let m = probe(deps, blob).await;
    let kind = media::detect(&m);
    tracing::info!(kind = kind.param(), format = ?m.format, "kind detected");
    (kind, m)
}

/// The kind a found file goes as, with what was read of it: the call's own kind or the media
/// stage's decision; read and decided here for a record that did not cross the media stage.
async fn kind_of(
    deps: &Deps,
    source: &Source,
    given: Option<MediaKind>,
    staged: &Staged,
) -> (MediaKind, Option<media::Metadata>) {
    match given.or(staged.kind) {
        Some(kind) => (kind, staged.meta.clone()),
        None => {
            let (kind, m) = read_kind(deps, &source.blob).await;
            (kind, Some(m))
        }
    }
}

/// A send of a file the gateway handles: the send stage's part, with the file found and read
/// ([`find`], [`read`]).
pub async fn send_file(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    target: SendTarget,
    staged: Staged,
) -> Response {
    let call = &env.payload;
    let detect = target.kind.is_none();
    let param = target.param();
    let params = call.params();
    let renamed = params.get("file_name").map(text).filter(|n| !n.is_empty());
    let Some(file) = staged.file.clone() else {
        return match detect {
            true => send_file_by_id(deps, env, &params).await,
            false => crate::passthrough::execute(deps, env).await,
        };
    };
    let source = Source::from(file);
    let (kind, meta) = kind_of(deps, &source, target.kind, &staged).await;
    let key = source.key(env.header.bot_id, kind, renamed);
    let mut use_cache = true;
    loop {
        let prepared = prepare(
            deps,
            &token,
            call.test_env,
            &source,
            &key,
            &params,
            kind.param(),
            meta.clone(),
            use_cache,
        )
        .await;
        let (body, deduped) = match prepared {
            Ok(Prepared::Part(part, extra)) => (
                CallBody::Multipart {
                    parts: parts_with(call, param, &extra, part),
                },
                false,
            ),
            Ok(Prepared::Id { file_id, deduped }) => {
                (by_file_id(call, param, kind, &params, file_id), deduped)
            }
            Err(answer) => return answer,
        };
        let answer =
            crate::passthrough::execute(deps, &as_call(env, kind.send_method(), body)).await;
        let sent = [(key.clone(), deduped, sent_file_id(&answer, kind))];
        if settle(deps, &answer, &sent).await {
            use_cache = false;
            continue;
        }
        return answer;
    }
}

/// `sendFile` given a file_id: sent by the method its type takes.
async fn send_file_by_id(
    deps: &Deps,
    env: &Envelope<Call>,
    params: &serde_json::Map<String, Value>,
) -> Response {
    let Some(id) = params.get("file").and_then(Value::as_str) else {
        return Response::from_error(&ApiError::bad_request("there is no file in the request"));
    };
    let Ok(fid) = FileId::decode(id) else {
        return Response::from_error(&ApiError::bad_request(
            "wrong file identifier/HTTP URL specified",
        ));
    };
    let kind = fid.file_type.sent_as();
    let body = by_file_id(&env.payload, "file", kind, params, id.to_owned());
    crate::passthrough::execute(deps, &as_call(env, kind.send_method(), body)).await
}

/// The call's body with the file given as `file_id` under `kind` (multipart stays multipart,
/// so other file parts go along; anything else becomes JSON).
fn by_file_id(
    call: &Call,
    param: &str,
    kind: MediaKind,
    params: &serde_json::Map<String, Value>,
    file_id: String,
) -> CallBody {
    match &call.body {
        CallBody::Multipart { .. } => CallBody::Multipart {
            parts: parts_with(
                call,
                param,
                &[],
                Part::Text {
                    name: kind.param().to_owned(),
                    value: file_id,
                },
            ),
        },
        _ => {
            let mut p = params.clone();
            p.remove("file_name");
            p.remove(param);
            p.insert(kind.param().to_owned(), Value::String(file_id));
            CallBody::Json {
                value: Value::Object(p),
            }
        }
    }
}

/// The file_id of the file a send answered with (a photo's: its largest size).
fn sent_file_id(answer: &Response, kind: MediaKind) -> Option<String> {
    let bytes = answer.body.inline_bytes()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    file_id_in(&v["result"], kind)
}

/// The file_id of a message's `kind` of media (a photo's: its largest size).
pub(crate) fn file_id_in(message: &Value, kind: MediaKind) -> Option<String> {
    let media = match &message[kind.param()] {
        Value::Array(sizes) => sizes.last()?,
        other => other,
    };
    media["file_id"].as_str().map(str::to_owned)
}

/// Uploads a blob over MTProto as the bot and keeps it as `media` (`uploadMedia` to itself).
async fn mtproto_upload(
    deps: &Deps,
    token: &schemas::BotToken,
    test_env: bool,
    blob: &BlobRef,
    file_name: &str,
    media: NewMedia,
) -> Result<StoredMedia, Response> {
    let Some(mtproto) = deps.files.mtproto() else {
        return Err(Response::from_error(&ApiError::bad_request(
            "file is too big for the Bot API; set TELEGRAM_API_ID and TELEGRAM_API_HASH (or --upstream-local) to send it",
        )));
    };
    // A token the Bot API refuses must not be tried on MTProto.
    crate::files::username(deps, token, test_env).await?;
    let reader = deps
        .blobs
        .open(blob)
        .await
        .map_err(failures::lost("the file"))?;
    let stream = Box::pin(crate::progress::Progress::new(
        tokio_util::io::ReaderStream::with_capacity(reader, 512 * 1024),
        "mtproto",
        blob.size,
    ));
    let started = std::time::Instant::now();
    let uploaded = mtproto
        .upload(token, stream, blob.size, file_name)
        .await
        .map_err(failures::mtproto("upload"))?;
    tracing::info!(
        bytes = blob.size,
        seconds = started.elapsed().as_secs_f64(),
        "uploaded over MTProto"
    );
    telegram::sent::mark();
    let stored = mtproto
        .upload_media(token, uploaded, media)
        .await
        .map_err(failures::mtproto("sending the upload"))?;
    crate::metrics::UPLOADS
        .with_label_values(&["mtproto"])
        .inc();
    Ok(stored)
}

fn mime_or_default(content_type: Option<String>) -> String {
    content_type
        .filter(|c| c.parse::<mime::Mime>().is_ok())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// The gateway's `upload<Type>` methods: the file parameter each takes (that of the matching
/// send method); `uploadFile` takes `file`, of a kind detected from its content.
pub fn upload_param(method: &str) -> Option<&'static str> {
    if method.eq_ignore_ascii_case("uploadFile") {
        return Some("file");
    }
    MediaKind::of_upload_method(method).map(MediaKind::param)
}

fn int(params: &serde_json::Map<String, Value>, k: &str) -> Option<i64> {
    match params.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What Telegram should keep the upload as, from the kind and the request's values (with the
/// file's own metadata added where the request had none).
fn media_for(
    kind: MediaKind,
    params: &serde_json::Map<String, Value>,
    mime: String,
    file_name: String,
) -> NewMedia {
    use tl::types as t;
    let duration = int(params, "duration").unwrap_or(0);
    let width = int(params, "width").unwrap_or(0) as i32;
    let height = int(params, "height").unwrap_or(0) as i32;
    let text = |k: &str| params.get(k).map(text).filter(|s| !s.is_empty());
    let video = |round: bool, w: i32, h: i32| -> tl::enums::DocumentAttribute {
        t::DocumentAttributeVideo {
            round_message: round,
            supports_streaming: params
                .get("supports_streaming")
                .is_some_and(|v| v == true || v == "true"),
            nosound: false,
            duration: duration as f64,
            w,
            h,
            preload_prefix_size: None,
            video_start_ts: None,
            video_codec: None,
        }
        .into()
    };
    let mut attributes: Vec<tl::enums::DocumentAttribute> =
        vec![t::DocumentAttributeFilename { file_name }.into()];
    match kind {
        MediaKind::Video => attributes.push(video(false, width, height)),
        MediaKind::VideoNote => {
            let side = int(params, "length").unwrap_or(0) as i32;
            attributes.push(video(true, side, side));
        }
        MediaKind::Animation => {
            attributes.push(tl::enums::DocumentAttribute::Animated);
            attributes.push(video(false, width, height));
        }
        MediaKind::Audio | MediaKind::Voice => attributes.push(
            t::DocumentAttributeAudio {
                voice: kind == MediaKind::Voice,
                duration: duration as i32,
                title: text("title"),
                performer: text("performer"),
                waveform: None,
            }
            .into(),
        ),
        MediaKind::Sticker => attributes.push(
            t::DocumentAttributeSticker {
                mask: false,
                alt: text("emoji").unwrap_or_default(),
                stickerset: tl::enums::InputStickerSet::Empty,
                mask_coords: None,
            }
            .into(),
        ),
        MediaKind::Photo | MediaKind::Document => {}
    }
    NewMedia {
        photo: kind == MediaKind::Photo,
        mime_type: mime,
        attributes,
        force_file: kind == MediaKind::Document,
    }
}

/// `upload<Type>` and `uploadFile`: the file is uploaded and kept, sent to nobody
/// (ENHANCED.md): over MTProto (`messages.uploadMedia` to the bot itself), else through the
/// storage chat; the send stage's part, with the file found and read ([`find`], [`read`]).
/// Chat, reply and markup parameters are ignored.
pub async fn upload_only(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    upload: UploadOnly,
    staged: Staged,
) -> Response {
    let fixed = upload.kind;
    let Some(file) = staged.file.clone() else {
        // `find` answers every call without a file.
        return Response::from_error(&ApiError::internal("the file to upload was not found"));
    };
    let params = env.payload.params();
    let renamed = params.get("file_name").map(text).filter(|n| !n.is_empty());
    let source = Source::from(file);
    let (kind, meta) = kind_of(deps, &source, fixed, &staged).await;
    let key = source.key(env.header.bot_id, kind, renamed);
    match keep(deps, env, &token, &source, &key, &params, meta).await {
        Ok((fid, size)) => upload_answer(&fid, Some(size)),
        Err(answer) => answer,
    }
}

/// Keeps a file as `key.kind` without sending it to anybody: by its cached file_id when the
/// bot kept or sent the same before, else over MTProto (`uploadMedia` to the bot itself), else
/// through the storage chat. Answers the file_id and the size.
pub(crate) async fn keep(
    deps: &Deps,
    env: &Envelope<Call>,
    token: &schemas::BotToken,
    source: &Source,
    key: &store::UploadKey,
    given: &serde_json::Map<String, Value>,
    meta: Option<media::Metadata>,
) -> Result<(FileId, u64), Response> {
    if let Ok(Some(cached)) = deps.store.cached_upload(key).await {
        if let Ok(fid) = FileId::decode(&cached) {
            crate::metrics::UPLOADS
                .with_label_values(&["deduped"])
                .inc();
            return Ok((fid, source.blob.size));
        }
    }
    let meta = match meta {
        Some(meta) => meta,
        None => probe(deps, &source.blob).await,
    };
    let kind = key.kind;
    let extra = missing_metadata(&meta, kind, given);
    let ctype = content_type(source.content_type.clone(), &meta);
    let kept = if deps.files.mtproto().is_some() {
        let media = media_for(
            kind,
            &with_metadata(given, &extra),
            mime_or_default(ctype),
            key.file_name.clone(),
        );
        mtproto_upload(
            deps,
            token,
            env.payload.test_env,
            &source.blob,
            &key.file_name,
            media,
        )
        .await
        .map(|s| (s.file_id, s.file_size))
    } else {
        let part = Part::File {
            name: kind.param().to_owned(),
            file_name: Some(key.file_name.clone()),
            content_type: ctype,
            blob: source.blob.clone(),
        };
        through_storage_chat(deps, env, kind, &extra, part).await
    };
    if let Ok((fid, _)) = &kept {
        if let Err(error) = deps.store.put_upload(key, &fid.encode()).await {
            tracing::warn!(%error, "could not cache an upload");
        }
    }
    kept
}

/// Keeps a file by posting it to the storage chat (`--storage-chat-id`), taking its file_id
/// and deleting the message. For deployments without MTProto; Bot API limits apply.
async fn through_storage_chat(
    deps: &Deps,
    env: &Envelope<Call>,
    kind: MediaKind,
    extra: &[(&'static str, String)],
    file: Part,
) -> Result<(FileId, u64), Response> {
    let chat = deps.files.storage_chat().expect("checked by the caller");
    let method = kind.send_method();
    let size = match &file {
        Part::File { blob, .. } => blob.size,
        Part::Text { .. } => 0,
    };
    if size > bot_api_limit(method) && !deps.files.local_mode() {
        return Err(Response::from_error(&ApiError::bad_request(
            "file is too big for the Bot API; set TELEGRAM_API_ID and TELEGRAM_API_HASH to keep it over MTProto",
        )));
    }
    let mut parts = vec![
        Part::Text {
            name: "chat_id".into(),
            value: chat.to_string(),
        },
        Part::Text {
            name: "disable_notification".into(),
            value: "true".into(),
        },
    ];
    parts.extend(extra.iter().map(|(k, v)| Part::Text {
        name: (*k).to_owned(),
        value: v.clone(),
    }));
    parts.push(file);
    let answer =
        crate::passthrough::execute(deps, &as_call(env, method, CallBody::Multipart { parts }))
            .await;
    if answer.status != 200 {
        return Err(answer);
    }
    let sent: Value = answer
        .body
        .inline_bytes()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let media = match &sent["result"][kind.param()] {
        Value::Array(sizes) => sizes.last().cloned().unwrap_or_default(),
        other => other.clone(),
    };
    let fid = media["file_id"]
        .as_str()
        .and_then(|id| FileId::decode(id).ok());
    let message_id = sent["result"]["message_id"].as_i64();
    // The message is only a way to get the file kept; it goes whether or not that worked.
    if let Some(message_id) = message_id {
        let delete = CallBody::Json {
            value: serde_json::json!({"chat_id": chat, "message_id": message_id}),
        };
        let deleted =
            crate::passthrough::execute(deps, &as_call(env, "deleteMessage", delete)).await;
        if deleted.status != 200 {
            tracing::warn!(
                status = deleted.status,
                "could not delete a storage chat message"
            );
        }
    }
    let Some(fid) = fid else {
        tracing::error!("the storage chat's answer names no file");
        return Err(Response::from_error(&ApiError::bad_gateway(
            "the storage chat's answer names no file",
        )));
    };
    crate::metrics::UPLOADS
        .with_label_values(&["storage_chat"])
        .inc();
    Ok((fid, media["file_size"].as_u64().unwrap_or(size)))
}

pub(crate) fn upload_answer(fid: &FileId, size: Option<u64>) -> Response {
    let mut result = serde_json::json!({
        "file_id": fid.encode(),
        "file_unique_id": fid.unique_id(),
        "file_type": fid.file_type.sent_as().param(),
    });
    if let Some(size) = size {
        result["file_size"] = size.into();
    }
    Response::gateway_json(200, &serde_json::json!({"ok": true, "result": result}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_params() {
        assert_eq!(file_param("sendVideoNote"), Some("video_note"));
        assert_eq!(file_param("sendMessage"), None);
        assert_eq!(upload_param("UPLOADVIDEONOTE"), Some("video_note"));
        assert_eq!(upload_param("uploadFile"), Some("file"));
        assert!(is_send_file("SENDFILE"));
        assert_eq!(FileType::DocumentAsFile.sent_as(), MediaKind::Document);
        assert_eq!(FileType::VideoNote.sent_as().send_method(), "sendVideoNote");
        // A video story is sent as a document only once re-typed: sendDocument does not take
        // its file_id as it is.
        assert!(!accepts("sendDocument", FileType::VideoStory));
        assert!(accepts("sendDocument", FileType::DocumentAsFile));
        assert!(accepts("sendPhoto", FileType::ProfilePhoto));
        assert!(!accepts("sendVideo", FileType::Animation));
        assert!(accepts("sendMessage", FileType::Video));
    }
}
