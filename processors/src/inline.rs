//! answerInlineQuery with the gateway's upload powers (ENHANCED.md, "Files: uploads"):
//! - a result whose URL points at a file over Telegram's URL limits (5 MB photos, 20 MB
//!   otherwise) is fetched by the gateway, kept (MTProto or the storage chat) and sent as the
//!   matching cached result (`photo_file_id`, `video_file_id`, ...);
//! - a result of the gateway's `type: "file"` (with `file_url`, a `file_id`, or a part) gets its
//!   kind from the file's content;
//! - a multipart part `inline_file<N>` is the file of result N (0-based; its URL left empty).
//!
//! URL sizes are learnt from the response headers (all results at once, a few seconds at most):
//! a URL of unknown size, or within the limits, stays as it is for Telegram to fetch.

use crate::uploads::{file_part, keep, keep_fetched, probe, Source};
use crate::Deps;
use schemas::{
    ApiError, BotToken, Call, CallBody, Envelope, MediaKind, Part, Response, Staged, StagedItem,
};
use serde_json::{Map, Value};
use std::time::Duration;
use telegram::file_id::FileId;

/// How long the size of all URL results may take to learn: inline answers must be quick.
const SIZE_CHECK: Duration = Duration::from_secs(5);

/// The URL field of each result type that carries a file, its kind (none for the gateway's
/// `file`, whose kind its content says), and Telegram's limit.
fn url_field(result_type: &str) -> Option<(&'static str, Option<MediaKind>, u64)> {
    const MB: u64 = 1024 * 1024;
    Some(match result_type {
        "photo" => ("photo_url", Some(MediaKind::Photo), 5 * MB),
        "gif" => ("gif_url", Some(MediaKind::Animation), 20 * MB),
        "mpeg4_gif" => ("mpeg4_url", Some(MediaKind::Animation), 20 * MB),
        "video" => ("video_url", Some(MediaKind::Video), 20 * MB),
        "audio" => ("audio_url", Some(MediaKind::Audio), 20 * MB),
        "voice" => ("voice_url", Some(MediaKind::Voice), 20 * MB),
        "document" => ("document_url", Some(MediaKind::Document), 20 * MB),
        "file" => ("file_url", None, 0),
        _ => return None,
    })
}

/// The results of an answer, when `results` is a JSON array.
pub(crate) fn results(call: &Call) -> Option<Vec<Value>> {
    match call.params().get("results")? {
        Value::String(s) => serde_json::from_str::<Vec<Value>>(s).ok(),
        Value::Array(a) => Some(a.clone()),
        _ => None,
    }
}

/// Whether the gateway must look at an answerInlineQuery: a `file` result, an `inline_file`
/// part, or a result with a file URL (whose size only a look can tell).
pub fn takes_over(call: &Call, results: &[Value]) -> bool {
    if let CallBody::Multipart { parts } = &call.body {
        if parts
            .iter()
            .any(|p| matches!(p, Part::File { name, .. } if name.starts_with("inline_file")))
        {
            return true;
        }
    }
    results.iter().any(|r| {
        let t = r["type"].as_str().unwrap_or("");
        url_field(t).is_some_and(|(field, ..)| t == "file" || r[field].is_string())
    })
}

/// A result as its cached counterpart, for a kept file of `kind`.
fn cached(result: &Value, kind: MediaKind, file_id: &str, file_name: &str) -> Value {
    let original = result["type"].as_str().unwrap_or("");
    let (t, field) = match kind {
        MediaKind::Photo => ("photo", "photo_file_id"),
        MediaKind::Animation if original == "gif" => ("gif", "gif_file_id"),
        MediaKind::Animation => ("mpeg4_gif", "mpeg4_file_id"),
        MediaKind::Video | MediaKind::VideoNote => ("video", "video_file_id"),
        MediaKind::Audio => ("audio", "audio_file_id"),
        MediaKind::Voice => ("voice", "voice_file_id"),
        MediaKind::Sticker => ("sticker", "sticker_file_id"),
        MediaKind::Document => ("document", "document_file_id"),
    };
    let keep: &[&str] = if t == "sticker" {
        &["id", "reply_markup", "input_message_content"]
    } else {
        &[
            "id",
            "title",
            "description",
            "caption",
            "parse_mode",
            "caption_entities",
            "show_caption_above_media",
            "reply_markup",
            "input_message_content",
        ]
    };
    let mut out = Map::new();
    out.insert("type".into(), t.into());
    for k in keep {
        if let Some(v) = result.get(*k) {
            out.insert((*k).into(), v.clone());
        }
    }
    out.insert(field.into(), file_id.into());
    // Cached video, voice and document results must have a title.
    if matches!(t, "video" | "voice" | "document") && !out.contains_key("title") {
        out.insert("title".into(), file_name.into());
    }
    Value::Object(out)
}

/// What to do with one result.
enum Plan {
    /// Leave it as it is.
    Keep,
    /// Its file, already in hand (an `inline_file` part, or a URL fetched).
    Upload(Source),
    /// A `file` result naming a file_id: the cached result of its type.
    ById(String),
}

async fn plan(deps: &Deps, call: &Call, n: usize, r: &Value) -> Result<Plan, Response> {
    let t = r["type"].as_str().unwrap_or("");
    if let Some((blob, name, ctype)) = file_part(call, &format!("inline_file{n}")) {
        return Ok(Plan::Upload(Source {
            blob: blob.clone(),
            file_name: name.unwrap_or("file").to_owned(),
            content_type: ctype.map(str::to_owned),
        }));
    }
    let Some((field, _, limit)) = url_field(t) else {
        return Ok(Plan::Keep);
    };
    if t == "file" {
        if let Some(id) = r["file_id"].as_str() {
            return Ok(Plan::ById(id.to_owned()));
        }
    }
    let Some(url) = r[field].as_str().filter(|u| crate::uploads::is_url(u)) else {
        return if t == "file" {
            Err(Response::from_error(&ApiError::bad_request(format!(
                "result {n} of type file has no file_url, file_id or inline_file{n}"
            ))))
        } else {
            Ok(Plan::Keep)
        };
    };
    let opened = tokio::time::timeout(SIZE_CHECK, deps.files.fetcher().open(url)).await;
    let fetched = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) if t == "file" => return Err(crate::failures::url(&e).into()),
        // Telegram gets the URL as the bot gave it, and says what it thinks of it.
        Ok(Err(_)) | Err(_) => return Ok(Plan::Keep),
    };
    let small = fetched.size.is_none_or(|s| s <= limit);
    if t != "file" && small {
        return Ok(Plan::Keep);
    }
    keep_fetched(deps, fetched).await.map(Plan::Upload)
}

/// The kind a result's file goes as: the result type's own, else what the file is.
fn kind_of(r: &Value, meta: &media::Metadata) -> MediaKind {
    match url_field(r["type"].as_str().unwrap_or("")) {
        Some((_, Some(kind), _)) => kind,
        _ => media::detect(meta),
    }
}

/// Every result planned: the files to keep found (an `inline_file` part, a URL over
/// Telegram's limits fetched) and kept in the blob store, one [`StagedItem`] per result, the
/// call's errors found (the files stage's part). `Err`: the call's answer.
pub(crate) async fn find(
    deps: &Deps,
    env: &Envelope<Call>,
    results: &[Value],
) -> Result<Staged, Response> {
    let call = &env.payload;
    let plans = futures_util::future::join_all(
        results
            .iter()
            .enumerate()
            .map(|(n, r)| plan(deps, call, n, r)),
    )
    .await;
    let mut items = Vec::with_capacity(results.len());
    for (n, plan) in plans.into_iter().enumerate() {
        let file = match plan? {
            Plan::Keep => None,
            Plan::ById(id) => {
                if FileId::decode(&id).is_err() {
                    return Err(Response::from_error(&ApiError::bad_request(format!(
                        "result {n}: wrong file identifier specified"
                    ))));
                }
                None
            }
            Plan::Upload(source) => {
                if deps.files.mtproto().is_none() && deps.files.storage_chat().is_none() {
                    return Err(Response::from_error(&ApiError::bad_request(
                        "inline results with files to upload need MTProto (TELEGRAM_API_ID and TELEGRAM_API_HASH) or a storage chat (--storage-chat-id)",
                    )));
                }
                Some(source.into())
            }
        };
        items.push(StagedItem { file, meta: None });
    }
    Ok(Staged {
        items,
        ..Default::default()
    })
}

/// What the media stage adds: each file to keep read (its kind follows from it when the
/// result's type does not say).
pub(crate) async fn read(deps: &Deps, env: &Envelope<Call>) -> Staged {
    let mut staged = env.payload.staged.as_deref().cloned().unwrap_or_default();
    for item in &mut staged.items {
        if let Some(file) = &item.file {
            item.meta = Some(probe(deps, &file.blob).await);
        }
    }
    staged
}

/// answerInlineQuery with its results planned and their files found and read ([`find`],
/// [`read`]): each file kept, its result rewritten as the cached counterpart, the answer sent.
pub async fn answer_inline_query(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    results: Vec<Value>,
    staged: Staged,
) -> Response {
    let call = &env.payload;
    let mut out = Vec::with_capacity(results.len());
    for (n, r) in results.iter().enumerate() {
        let item = staged.items.get(n).cloned().unwrap_or_default();
        let by_id = (r["type"].as_str() == Some("file"))
            .then(|| r["file_id"].as_str())
            .flatten()
            .filter(|_| item.file.is_none());
        let result = match (item.file, by_id) {
            (Some(file), _) => {
                let source = Source::from(file);
                let meta = match item.meta {
                    Some(meta) => meta,
                    None => probe(deps, &source.blob).await,
                };
                let kind = kind_of(r, &meta);
                let key = source.key(env.header.bot_id, kind, None);
                let given = r.as_object().cloned().unwrap_or_default();
                match keep(deps, env, &token, &source, &key, &given, Some(meta)).await {
                    Ok((fid, _)) => cached(r, kind, &fid.encode(), &source.file_name),
                    Err(answer) => return answer,
                }
            }
            (None, Some(id)) => match FileId::decode(id) {
                Ok(fid) => cached(r, fid.file_type.sent_as(), id, "file"),
                Err(_) => {
                    return Response::from_error(&ApiError::bad_request(format!(
                        "result {n}: wrong file identifier specified"
                    )))
                }
            },
            (None, None) => r.clone(),
        };
        out.push(result);
    }
    let consumed: Vec<String> = (0..results.len())
        .map(|n| format!("inline_file{n}"))
        .collect();
    let results = Value::Array(out);
    let body = match &call.body {
        CallBody::Json {
            value: Value::Object(m),
        } => {
            let mut m = m.clone();
            m.insert("results".into(), results);
            CallBody::Json {
                value: Value::Object(m),
            }
        }
        _ => CallBody::Multipart {
            parts: crate::groups::parts_replacing(call, "results", &results, &consumed, Vec::new()),
        },
    };
    crate::passthrough::execute(
        deps,
        &crate::uploads::as_call(env, "answerInlineQuery", body),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_results_keep_what_they_may_and_get_a_title() {
        let r = json!({"type": "video", "id": "1", "video_url": "http://x/v.mp4",
            "mime_type": "video/mp4", "thumbnail_url": "http://x/t.jpg", "caption": "c",
            "video_duration": 3});
        assert_eq!(
            cached(&r, MediaKind::Video, "ID", "v.mp4"),
            json!({"type": "video", "id": "1", "caption": "c", "video_file_id": "ID",
                "title": "v.mp4"})
        );
        let gif = json!({"type": "gif", "id": "2", "gif_url": "u", "title": "t"});
        assert_eq!(
            cached(&gif, MediaKind::Animation, "G", "g")["gif_file_id"],
            "G"
        );
        let file = json!({"type": "file", "id": "3", "file_url": "u", "caption": "x"});
        assert_eq!(
            cached(&file, MediaKind::Sticker, "S", "s"),
            json!({"type": "sticker", "id": "3", "sticker_file_id": "S"})
        );
        assert_eq!(
            cached(&file, MediaKind::Animation, "M", "m")["type"],
            "mpeg4_gif"
        );
    }
}
