//! sendMediaGroup with the gateway's upload powers (ENHANCED.md, "Files: uploads"): each
//! item's `media` may be a URL of up to 2000 MB (fetched by the gateway), an `attach://` part
//! of any size, or a file_id of another type (re-typed) or with the item's `file_name`
//! (renamed). Each file is prepared as a single send's would be (dedupe, metadata from the file
//! into the item where it lacks it, Bot API part within the limits, MTProto beyond), then the
//! group goes upstream once, and the answer is the Bot API's own array of Messages.

use crate::uploads::{
    as_call, is_url, prepare, probe, retyped, settle, source_from, text, Prepared, Source,
};
use crate::Deps;
use schemas::{BotToken, Call, CallBody, Envelope, MediaKind, Part, Response, Staged, StagedItem};
use serde_json::{Map, Value};

/// The media items of a call, when `media` is a JSON array.
pub(crate) fn items(call: &Call) -> Option<Vec<Value>> {
    match call.params().get("media")? {
        Value::String(s) => serde_json::from_str::<Vec<Value>>(s).ok(),
        Value::Array(a) => Some(a.clone()),
        _ => None,
    }
}

/// The kind of an InputMedia item, of those a media group takes.
fn kind(item: &Value) -> Option<MediaKind> {
    MediaKind::from_param(item["type"].as_str()?).filter(|k| {
        matches!(
            k,
            MediaKind::Photo | MediaKind::Video | MediaKind::Audio | MediaKind::Document
        )
    })
}

/// Whether the gateway must handle a sendMediaGroup: an item with a URL, an uploaded part
/// (dedupe, metadata, size), a `file_name`, or a file_id of another type.
pub fn takes_over(items: &[Value]) -> bool {
    items.iter().any(|item| {
        let media = item["media"].as_str().unwrap_or("");
        let renamed = item.get("file_name").is_some();
        is_url(media)
            || media.starts_with("attach://")
            || kind(item).is_some_and(|k| retyped(k.send_method(), media, renamed).is_some())
    })
}

/// Where one item's file is, under what key it would be cached, and what was read of it.
struct Item {
    source: Source,
    key: store::UploadKey,
    meta: Option<media::Metadata>,
}

/// The upload cache's key of an item's file.
fn key_of(bot: schemas::BotId, item: &Value, kind: MediaKind, source: &Source) -> store::UploadKey {
    let renamed = item["file_name"].as_str().filter(|n| !n.is_empty());
    source.key(bot, kind, renamed.map(str::to_owned))
}

/// Every item's file found (fetched, a part, a file_id's bytes) and kept in the blob store:
/// the files stage's part, so neither a later stage nor a retry fetches again. `Err`: the
/// call's answer (a URL refused).
pub(crate) async fn find(
    deps: &Deps,
    env: &Envelope<Call>,
    token: &BotToken,
    items: &[Value],
) -> Result<Staged, Response> {
    let mut staged = Vec::with_capacity(items.len());
    for item in items {
        let renamed = item["file_name"].as_str().filter(|n| !n.is_empty());
        // Only what the item names: a bare part of the same name is not this item's.
        let file = match (kind(item), item["media"].as_str()) {
            (Some(kind), Some(media)) => source_from(
                deps,
                token,
                &env.payload,
                Some(media),
                "",
                Some(kind.send_method()),
                renamed.is_some(),
            )
            .await?
            .map(Into::into),
            _ => None,
        };
        staged.push(StagedItem { file, meta: None });
    }
    Ok(Staged {
        items: staged,
        ..Default::default()
    })
}

/// What the media stage adds to a group: each found file read, but for those the bot already
/// sent as the same kind (their cached file_id goes instead).
pub(crate) async fn read(deps: &Deps, env: &Envelope<Call>, items: &[Value]) -> Staged {
    let mut staged = env.payload.staged.as_deref().cloned().unwrap_or_default();
    for (item, s) in items.iter().zip(staged.items.iter_mut()) {
        let (Some(kind), Some(file)) = (kind(item), &s.file) else {
            continue;
        };
        let source = Source::from(file.clone());
        let key = key_of(env.header.bot_id, item, kind, &source);
        if !matches!(deps.store.cached_upload(&key).await, Ok(Some(_))) {
            s.meta = Some(probe(deps, &source.blob).await);
        }
    }
    staged
}

/// sendMediaGroup with the items' files found and read ([`find`], [`read`]): each prepared,
/// the group sent once.
pub async fn send_media_group(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    items: Vec<Value>,
    staged: Staged,
) -> Response {
    let call = &env.payload;
    let found: Vec<Option<Item>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let s = staged.items.get(i)?;
            let (kind, file) = (kind(item)?, s.file.clone()?);
            let source = Source::from(file);
            Some(Item {
                key: key_of(env.header.bot_id, item, kind, &source),
                source,
                meta: s.meta.clone(),
            })
        })
        .collect();
    // Parts the items named by attach:// are replaced by the gateway's own; others (thumbnails)
    // go along as they came.
    let consumed: Vec<String> = items
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_some())
        .filter_map(|(item, _)| {
            item["media"]
                .as_str()?
                .strip_prefix("attach://")
                .map(str::to_owned)
        })
        .collect();

    let mut use_cache = true;
    loop {
        let mut out_items = Vec::with_capacity(items.len());
        let mut files = Vec::new();
        let mut sent = Vec::new();
        for (i, (item, f)) in items.iter().zip(&found).enumerate() {
            let mut item = item.clone();
            if let Value::Object(m) = &mut item {
                m.remove("file_name");
            }
            let Some(f) = f else {
                out_items.push(item);
                continue;
            };
            let given: Map<String, Value> = item.as_object().cloned().unwrap_or_default();
            let name = format!("telepipe_media{i}");
            let prepared = prepare(
                deps,
                &token,
                call.test_env,
                &f.source,
                &f.key,
                &given,
                &name,
                f.meta.clone(),
                use_cache,
            )
            .await;
            match prepared {
                Ok(Prepared::Part(part, extra)) => {
                    item["media"] = Value::String(format!("attach://{name}"));
                    for (k, v) in extra {
                        item[k] = json_value(&v);
                    }
                    files.push(part);
                    sent.push((i, f.key.clone(), false));
                }
                Ok(Prepared::Id { file_id, deduped }) => {
                    item["media"] = Value::String(file_id);
                    sent.push((i, f.key.clone(), deduped));
                }
                Err(answer) => return answer,
            }
            out_items.push(item);
        }
        let body = CallBody::Multipart {
            parts: parts_replacing(call, "media", &Value::Array(out_items), &consumed, files),
        };
        let answer = crate::passthrough::execute(deps, &as_call(env, "sendMediaGroup", body)).await;
        let messages: Vec<Value> = answer
            .body
            .inline_bytes()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["result"].as_array().cloned())
            .unwrap_or_default();
        let settled: Vec<_> = sent
            .into_iter()
            .map(|(i, key, deduped)| {
                let id = messages
                    .get(i)
                    .and_then(|m| crate::uploads::file_id_in(m, key.kind));
                (key, deduped, id)
            })
            .collect();
        if settle(deps, &answer, &settled).await {
            use_cache = false;
            continue;
        }
        return answer;
    }
}

/// The call's parameters as parts, with `param` set to `value` (JSON) and the parts named in
/// `consumed` left out, then `files`.
pub(crate) fn parts_replacing(
    call: &Call,
    param: &str,
    value: &Value,
    consumed: &[String],
    files: Vec<Part>,
) -> Vec<Part> {
    let skip = |n: &str| n == param || consumed.iter().any(|c| c == n);
    let mut out: Vec<Part> = match &call.body {
        CallBody::Multipart { parts } => parts
            .iter()
            .filter(|p| match p {
                Part::Text { name, .. } | Part::File { name, .. } => !skip(name),
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    for (k, v) in call.params() {
        let present = out
            .iter()
            .any(|p| matches!(p, Part::Text { name, .. } | Part::File { name, .. } if *name == k));
        if !skip(&k) && !present {
            out.push(Part::Text {
                name: k,
                value: text(&v),
            });
        }
    }
    out.push(Part::Text {
        name: param.into(),
        value: value.to_string(),
    });
    out.extend(files);
    out
}

/// A metadata value as the JSON of an InputMedia field: numbers and booleans as such.
fn json_value(v: &str) -> Value {
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => v.into(),
    }
}
