//! sendMediaGroup with the gateway's upload powers (ENHANCED.md, "Files: uploads"): each
//! item's `media` may be a URL of up to 2000 MB (fetched by the gateway), an `attach://` part
//! of any size, or a file_id of another type (re-typed) or with the item's `file_name`
//! (renamed). Each file is prepared as a single send's would be (dedupe, metadata from the file
//! into the item where it lacks it, Bot API part within the limits, MTProto beyond), then the
//! group goes upstream once, and the answer is the Bot API's own array of Messages.

use crate::uploads::{
    as_call, is_url, prepare, retyped, settle, source_from, text, Prepared, Source,
};
use crate::Deps;
use schemas::{BotToken, Call, CallBody, Envelope, MediaKind, Part, Response};
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

/// Where one item's file is, and under what key it would be cached.
struct Item {
    source: Source,
    key: store::UploadKey,
}

pub async fn send_media_group(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    items: Vec<Value>,
) -> Response {
    let call = &env.payload;
    // Every file first (fetched, found or downloaded), so a retry never fetches again.
    let mut found: Vec<Option<Item>> = Vec::with_capacity(items.len());
    for item in &items {
        let Some(kind) = kind(item) else {
            found.push(None);
            continue;
        };
        let renamed = item["file_name"].as_str().filter(|n| !n.is_empty());
        let media = item["media"].as_str();
        // Only what the item names: a bare part of the same name is not this item's.
        let source = match media {
            Some(m) => {
                source_from(
                    deps,
                    &token,
                    call,
                    Some(m),
                    "",
                    Some(kind.send_method()),
                    renamed.is_some(),
                )
                .await
            }
            None => Ok(None),
        };
        match source {
            Ok(Some(source)) => found.push(Some(Item {
                key: source.key(env.header.bot_id, kind, renamed.map(str::to_owned)),
                source,
            })),
            Ok(None) => found.push(None),
            Err(answer) => return answer,
        }
    }
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
                None,
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
