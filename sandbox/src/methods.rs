//! What each Bot API method does in the sandbox.
//!
//! Implemented with real behaviour: getMe, sendMessage, getUpdates (long polling, offset,
//! allowed_updates,
//! 409 on overlapping polls or with a webhook set), setWebhook, deleteWebhook,
//! getWebhookInfo, the send* file methods and sendMediaGroup (multipart, attach://, URL,
//! file_id), getFile, getChat, deleteMessage, answerInlineQuery, sendChatAction. Every other
//! method of the catalogue is accepted, recorded and answered with a plausible result of its
//! return type. Unknown methods get Telegram's 404.

use crate::files;
use crate::request::{self, BotRequest, ParseError};
use crate::world::{FaultAction, RecordedCall, StoredFile, Webhook};
use crate::{json_response, Sandbox};
use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::time::Duration;
use telegram::file_id::FileType;

pub fn error(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

fn fail(code: u16, description: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        &error(code, description),
    )
}

fn bad(what: &str) -> Response<Body> {
    fail(400, &format!("Bad Request: {what}"))
}

fn ok(result: Value) -> Response<Body> {
    json_response(StatusCode::OK, &json!({"ok": true, "result": result}))
}

/// Answers a sent message, and keeps it for the MTProto face's `messages.getMessages`.
fn sent(sb: &Sandbox, r: &BotRequest, m: Value) -> Response<Body> {
    sb.world.lock().keep_message(r.bot_id, &m);
    ok(m)
}

fn sent_all(sb: &Sandbox, r: &BotRequest, ms: Vec<Value>) -> Response<Body> {
    {
        let mut w = sb.world.lock();
        for m in &ms {
            w.keep_message(r.bot_id, m);
        }
    }
    ok(Value::Array(ms))
}

fn now_s() -> i64 {
    schemas::now_ms() / 1000
}

pub async fn handle(sb: &Sandbox, req: Request<Body>) -> Response<Body> {
    let r = match request::parse(sb, req).await {
        Ok(r) => r,
        Err(ParseError::Unauthorized) => return fail(401, "Unauthorized"),
        Err(ParseError::NotFound) => return fail(404, "Not Found"),
        Err(ParseError::TooLarge) => return fail(413, "Request Entity Too Large"),
        Err(ParseError::Bad(m)) => return bad(&m),
    };
    sb.world.record(RecordedCall {
        seq: 0,
        bot_id: r.bot_id,
        method: r.method.clone(),
        http_method: r.http_method.clone(),
        test_env: r.test_env,
        encoding: r.encoding.to_owned(),
        params: r.recorded_params(),
        time_ms: schemas::now_ms(),
    });
    let resp = answer(sb, &r).await;
    for u in r.uploads.values() {
        // Uploads that became files were moved away; the rest are discarded.
        let _ = tokio::fs::remove_file(&u.path).await;
    }
    resp
}

async fn answer(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    match sb.world.take_fault(r.bot_id, &r.method) {
        Some(FaultAction::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultAction::Drop) => {
            let broken = futures_util::stream::once(async {
                Err::<bytes::Bytes, _>(std::io::Error::other("dropped by a sandbox fault"))
            });
            return Response::builder()
                .status(StatusCode::OK)
                .body(Body::from_stream(broken))
                .expect("valid response");
        }
        Some(FaultAction::Status {
            status,
            retry_after,
            body,
            content_type,
        }) => {
            if status == 429 {
                let after = retry_after.unwrap_or(1);
                return json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"ok": false, "error_code": 429,
                        "description": format!("Too Many Requests: retry after {after}"),
                        "parameters": {"retry_after": after}}),
                );
            }
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return match body {
                Some(b) => Response::builder()
                    .status(code)
                    .header(
                        header::CONTENT_TYPE,
                        content_type.as_deref().unwrap_or("text/html"),
                    )
                    .body(Body::from(b))
                    .expect("valid response"),
                None => fail(status, code.canonical_reason().unwrap_or("Error")),
            };
        }
        None => {}
    }
    let Some(method) = schemas::catalogue::canonical(&r.method) else {
        return fail(404, "Not Found");
    };
    if let Err(after) = flood_limits(sb, r) {
        return json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {after}"),
                "parameters": {"retry_after": after}}),
        );
    }
    match method {
        "getMe" => get_me(sb, r),
        "sendMessage" => send_message(sb, r),
        "getUpdates" => get_updates(sb, r).await,
        "setWebhook" => set_webhook(sb, r),
        "deleteWebhook" => delete_webhook(sb, r),
        "getWebhookInfo" => webhook_info(sb, r),
        "sendDocument" => send_file(sb, r, "document", FileType::Document).await,
        "sendPhoto" => send_file(sb, r, "photo", FileType::Photo).await,
        "sendVideo" => send_file(sb, r, "video", FileType::Video).await,
        "sendAudio" => send_file(sb, r, "audio", FileType::Audio).await,
        "sendVoice" => send_file(sb, r, "voice", FileType::Voice).await,
        "sendAnimation" => send_file(sb, r, "animation", FileType::Animation).await,
        "sendVideoNote" => send_file(sb, r, "video_note", FileType::VideoNote).await,
        "sendSticker" => send_file(sb, r, "sticker", FileType::Sticker).await,
        "sendMediaGroup" => send_media_group(sb, r).await,
        "getFile" => get_file(sb, r),
        "getChat" => match chat(sb, r, "chat_id") {
            Ok(c) => ok(full_chat(c)),
            Err(e) => bad(&e),
        },
        "deleteMessage" => delete_message(sb, r),
        "answerInlineQuery" => answer_inline_query(sb, r),
        "sendChatAction" => match (chat(sb, r, "chat_id"), r.str("action")) {
            (Err(e), _) => bad(&e),
            (Ok(_), None) => bad("action is empty"),
            (Ok(_), Some(_)) => ok(json!(true)),
        },
        other => generic(sb, r, other),
    }
}

fn get_me(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let mut s = sb.world.lock();
    let mut u = s.bot(r.bot_id).user();
    if let Value::Object(m) = &mut u {
        m.insert("can_join_groups".into(), true.into());
        m.insert("can_read_all_group_messages".into(), false.into());
        m.insert("supports_inline_queries".into(), false.into());
        m.insert("can_connect_to_business".into(), false.into());
        m.insert("has_main_web_app".into(), false.into());
    }
    ok(u)
}

/// Telegram's flood limits, when on: a send or an edit over them is refused with the seconds
/// to wait. The chat's kind is the sandbox's own (a known user or bot, a registered chat).
fn flood_limits(sb: &Sandbox, r: &BotRequest) -> Result<(), u64> {
    if !sb.limits.enabled() || !crate::limits::counted(&r.method) {
        return Ok(());
    }
    let Ok(c) = chat(sb, r, "chat_id") else {
        // The call's own answer says what is wrong with its chat.
        return Ok(());
    };
    let paid = r
        .str("allow_paid_broadcast")
        .is_some_and(|v| v == "true" || v == "1");
    sb.limits.admit(
        r.bot_id,
        c["id"].as_i64().unwrap_or(0),
        c["type"] == "private",
        paid,
    )
}

/// The Chat object a `chat_id` names, as the Bot API reads it: a number by its sign (a user or
/// bot the sandbox knows, with its names); `@name` only for a public chat registered through
/// the control API, since the Bot API knows neither users nor bots by username.
fn chat(sb: &Sandbox, r: &BotRequest, key: &str) -> Result<Value, String> {
    let Some(raw) = r.str(key).filter(|s| !s.is_empty()) else {
        return Err("chat_id is empty".into());
    };
    let w = sb.world.lock();
    if let Some(name) = raw.strip_prefix('@') {
        return w
            .public_chats
            .values()
            .find(|c| {
                c["username"]
                    .as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(name))
            })
            .cloned()
            .ok_or_else(|| "chat not found".to_owned());
    }
    let id: i64 = raw
        .trim()
        .parse()
        .map_err(|_| "chat not found".to_owned())?;
    if let Some(c) = w.public_chats.get(&id) {
        return Ok(c.clone());
    }
    if let Some(u) = w.users.get(&id) {
        let mut c = json!({"id": id, "type": "private", "first_name": u.first_name});
        if let Some(name) = &u.username {
            c["username"] = name.as_str().into();
        }
        return Ok(c);
    }
    if let Some(b) = w.bots.get(&id) {
        return Ok(json!({"id": id, "type": "private",
            "first_name": format!("Sandbox Bot {id}"), "username": b.username}));
    }
    Ok(if id > 0 {
        json!({"id": id, "type": "private", "first_name": format!("User {id}")})
    } else if id < -1_000_000_000_000 {
        json!({"id": id, "type": "supergroup", "title": format!("Supergroup {id}")})
    } else if id < 0 {
        json!({"id": id, "type": "group", "title": format!("Group {id}")})
    } else {
        return Err("chat not found".into());
    })
}

fn full_chat(mut c: Value) -> Value {
    if let Value::Object(m) = &mut c {
        m.insert("accent_color_id".into(), 0.into());
        m.insert("max_reaction_count".into(), 11.into());
        m.insert("accepted_gift_types".into(), json!({"unlimited_gifts": false, "limited_gifts": false, "unique_gifts": false, "premium_subscription": false}));
    }
    c
}

fn message(sb: &Sandbox, r: &BotRequest, chat: Value) -> Value {
    let chat_id = chat["id"].as_i64().unwrap_or(0);
    let mut s = sb.world.lock();
    let message_id = s.new_message(r.bot_id, chat_id);
    let from = s.bot(r.bot_id).user();
    let mut m = json!({"message_id": message_id, "from": from, "chat": chat, "date": now_s()});
    if let Some(c) = r.str("caption") {
        m["caption"] = c.into();
    }
    // What Telegram keeps with a message and shows again: its entities, its inline keyboard,
    // and the message it replies to (whole, one level deep).
    for k in ["entities", "caption_entities"] {
        if let Some(e @ Value::Array(_)) = r.json(k) {
            m[k] = e;
        }
    }
    if let Some(k) = r
        .json("reply_markup")
        .filter(|k| k["inline_keyboard"].is_array())
    {
        m["reply_markup"] = k;
    }
    let reply_to = r
        .json("reply_parameters")
        .and_then(|p| p["message_id"].as_i64())
        .or_else(|| r.i64("reply_to_message_id"));
    if let Some(mut replied) =
        reply_to.and_then(|id| s.messages.get(&(r.bot_id, chat_id, id)).cloned())
    {
        if let Value::Object(o) = &mut replied {
            o.remove("reply_to_message");
        }
        m["reply_to_message"] = replied;
    }
    m
}

fn send_message(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let c = match chat(sb, r, "chat_id") {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let Some(text) = r.str("text").filter(|t| !t.is_empty()) else {
        return bad("message text is empty");
    };
    if text.chars().count() > 4096 {
        return bad("message is too long");
    }
    let mut m = message(sb, r, c);
    m["text"] = text.into();
    sent(sb, r, m)
}

async fn get_updates(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let offset = r.i64("offset").unwrap_or(0);
    let limit = r.i64("limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(r.i64("timeout").unwrap_or(0).clamp(0, 3600) as u64);
    let (generation, mut changed) = {
        let mut s = sb.world.lock();
        let bot = s.bot(r.bot_id);
        if bot.webhook.is_some() {
            return fail(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first");
        }
        bot.poll_generation += 1;
        let g = bot.poll_generation;
        if let Some(Value::Array(kinds)) = r.json("allowed_updates") {
            // An empty list: Telegram's default again.
            bot.allowed_updates = (!kinds.is_empty()).then(|| {
                kinds
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            });
        }
        // Confirm what the offset acknowledges.
        if offset > 0 {
            while bot
                .updates
                .front()
                .and_then(|u| u["update_id"].as_i64())
                .is_some_and(|id| id < offset)
            {
                bot.updates.pop_front();
            }
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while bot.updates.len() > keep {
                bot.updates.pop_front();
            }
        }
        bot.touch();
        (g, bot.changed.subscribe())
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        {
            let mut s = sb.world.lock();
            let bot = s.bot(r.bot_id);
            changed.borrow_and_update();
            if bot.poll_generation != generation {
                return fail(409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running");
            }
            let kinds = &bot.allowed_updates;
            bot.updates.retain(|u| {
                u.as_object().is_some_and(|o| match kinds {
                    Some(kinds) => o.keys().any(|k| kinds.iter().any(|a| a == k)),
                    // Telegram's default: every kind but these, which a bot must ask for.
                    None => !o.keys().any(|k| OPT_IN_UPDATES.contains(&k.as_str())),
                })
            });
            if !bot.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                let out: Vec<Value> = bot.updates.iter().take(limit).cloned().collect();
                return ok(Value::Array(out));
            }
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
    }
}

/// Update kinds Telegram sends only to a bot that names them in `allowed_updates`.
const OPT_IN_UPDATES: [&str; 3] = ["chat_member", "message_reaction", "message_reaction_count"];

fn set_webhook(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let url = r.str("url").unwrap_or_default();
    let mut s = sb.world.lock();
    let bot = s.bot(r.bot_id);
    if url.is_empty() {
        bot.webhook = None;
        bot.touch();
        return json_response(
            StatusCode::OK,
            &json!({"ok": true, "result": true, "description": "Webhook was deleted"}),
        );
    }
    if !url.starts_with("https://") {
        return bad("bad webhook: An HTTPS URL must be provided for webhook");
    }
    bot.webhook = Some(Webhook {
        url,
        has_custom_certificate: r.uploads.contains_key("certificate"),
        max_connections: r.i64("max_connections").unwrap_or(40).clamp(1, 100),
        allowed_updates: r.json("allowed_updates"),
        secret_token: r.str("secret_token"),
    });
    if r.bool("drop_pending_updates") {
        bot.updates.clear();
    }
    bot.touch();
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "result": true, "description": "Webhook was set"}),
    )
}

fn delete_webhook(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let mut s = sb.world.lock();
    let bot = s.bot(r.bot_id);
    let had = bot.webhook.take().is_some();
    if r.bool("drop_pending_updates") {
        bot.updates.clear();
    }
    bot.touch();
    let d = if had {
        "Webhook was deleted"
    } else {
        "Webhook is already deleted"
    };
    json_response(
        StatusCode::OK,
        &json!({"ok": true, "result": true, "description": d}),
    )
}

fn webhook_info(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let mut s = sb.world.lock();
    let bot = s.bot(r.bot_id);
    let pending = bot.updates.len();
    let mut info = match &bot.webhook {
        Some(w) => serde_json::to_value(w).unwrap_or_default(),
        None => json!({"url": "", "has_custom_certificate": false}),
    };
    info["pending_update_count"] = pending.into();
    ok(info)
}

/// The file a send method names: an upload, `attach://`, a URL or a file_id.
async fn resolve(
    sb: &Sandbox,
    r: &BotRequest,
    value: Option<&str>,
    upload_name: &str,
    ft: FileType,
    given: &Map<String, Value>,
) -> Result<StoredFile, String> {
    let upload = match value {
        _ if r.uploads.contains_key(upload_name) && value.is_none() => {
            r.uploads.get(upload_name).cloned()
        }
        Some(v) if v.starts_with("attach://") => Some(
            r.uploads
                .get(&v["attach://".len()..])
                .cloned()
                .ok_or_else(|| "wrong file identifier/HTTP URL specified".to_owned())?,
        ),
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
            let limit = if ft == FileType::Photo {
                5 * 1024 * 1024
            } else {
                sb.cfg.max_url_fetch
            };
            Some(files::fetch(sb, v, limit).await?)
        }
        Some(v) => {
            let f = files::lookup(&sb.world.lock(), v)?;
            if f.file_type != ft {
                return Err(format!(
                    "can't use file of type {} as {}",
                    title(f.file_type.name()),
                    title(ft.name())
                ));
            }
            return Ok(f);
        }
        None => None,
    };
    let Some(upload) = upload else {
        return Err(format!("there is no {upload_name} in the request"));
    };
    if upload.size == 0 {
        return Err("file must be non-empty".into());
    }
    if ft == FileType::Photo && upload.size > sb.cfg.max_photo {
        return Err("PHOTO_SAVE_FILE_INVALID".into());
    }
    files::store(sb, &upload, ft, files::attributes(given))
        .await
        .map_err(|e| format!("failed to keep the file: {e}"))
}

fn title(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

async fn send_file(sb: &Sandbox, r: &BotRequest, param: &str, ft: FileType) -> Response<Body> {
    let c = match chat(sb, r, "chat_id") {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let value = if r.uploads.contains_key(param) {
        None
    } else {
        r.str(param)
    };
    let file = match resolve(sb, r, value.as_deref(), param, ft, &r.params).await {
        Ok(f) => f,
        Err(e) => return bad(&e),
    };
    let mut m = message(sb, r, c);
    m[param] = files::media_object(&file, &r.params);
    if ft == FileType::Animation {
        // An animation is a document too, as the Bot API shows it.
        let a = &m[param];
        let mut d = json!({"file_id": a["file_id"], "file_unique_id": a["file_unique_id"],
            "file_size": a["file_size"]});
        for k in ["file_name", "mime_type"] {
            if a[k].is_string() {
                d[k] = a[k].clone();
            }
        }
        m["document"] = d;
    }
    sent(sb, r, m)
}

async fn send_media_group(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let c = match chat(sb, r, "chat_id") {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let Some(Value::Array(items)) = r.json("media") else {
        return bad("media is empty or not an array");
    };
    if !(2..=10).contains(&items.len()) {
        return bad("wrong number of media in the group: must be 2-10");
    }
    let mut out = Vec::new();
    for item in &items {
        let (ft, key) = match item["type"].as_str() {
            Some("photo") => (FileType::Photo, "photo"),
            Some("video") => (FileType::Video, "video"),
            Some("document") => (FileType::Document, "document"),
            Some("audio") => (FileType::Audio, "audio"),
            _ => return bad("unsupported media type in the group"),
        };
        let media = item["media"].as_str();
        let given = item.as_object().cloned().unwrap_or_default();
        let file = match resolve(sb, r, media, "media", ft, &given).await {
            Ok(f) => f,
            Err(e) => return bad(&e),
        };
        let mut m = message(sb, r, c.clone());
        m[key] = files::media_object(&file, &given);
        if let Some(cap) = item["caption"].as_str() {
            m["caption"] = cap.into();
        }
        out.push(m);
    }
    sent_all(sb, r, out)
}

/// Checks what Telegram would: a query id, results as an array, and every cached result's
/// file_id naming a file of the bot's world.
fn answer_inline_query(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    if r.str("inline_query_id").is_none() {
        return bad("QUERY_ID_INVALID");
    }
    let Some(Value::Array(results)) = r.json("results") else {
        return bad("can't parse inline query results JSON object");
    };
    for result in &results {
        let Some(m) = result.as_object() else {
            return bad("can't parse inline query result");
        };
        for (k, v) in m.iter().filter(|(k, _)| k.ends_with("_file_id")) {
            let id = v.as_str().unwrap_or("");
            if files::lookup(&sb.world.lock(), id).is_err() {
                return bad(&format!("wrong file identifier in {k}"));
            }
        }
    }
    ok(json!(true))
}

fn get_file(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let Some(id) = r.str("file_id").filter(|s| !s.is_empty()) else {
        return bad("file_id is empty");
    };
    let f = match files::lookup(&sb.world.lock(), &id) {
        Ok(f) => f,
        Err(_) => return bad("invalid file_id"),
    };
    // As `telegram-bot-api --local`: any size, and the file's absolute path on disk.
    if sb.cfg.local {
        return ok(json!({
            "file_id": id,
            "file_unique_id": f.unique_id,
            "file_size": f.size,
            "file_path": f.disk_path.to_string_lossy(),
        }));
    }
    if f.size > sb.cfg.max_get_file {
        return bad("file is too big");
    }
    ok(json!({
        "file_id": id,
        "file_unique_id": f.unique_id,
        "file_size": f.size,
        "file_path": f.official_path,
    }))
}

fn delete_message(sb: &Sandbox, r: &BotRequest) -> Response<Body> {
    let c = match chat(sb, r, "chat_id") {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let Some(mid) = r.i64("message_id") else {
        return bad("message identifier is not specified");
    };
    let chat_id = c["id"].as_i64().unwrap_or(0);
    let mut s = sb.world.lock();
    let removed = s
        .chats
        .get_mut(&chat_id)
        .is_some_and(|ch| ch.messages.remove(&mid));
    if removed {
        ok(json!(true))
    } else {
        bad("message to delete not found")
    }
}

/// Every other method: accepted, recorded, answered with a plausible value of its type.
fn generic(sb: &Sandbox, r: &BotRequest, method: &str) -> Response<Body> {
    let returns = schemas::catalogue::returns(method).unwrap_or("");
    let result = match returns {
        "Boolean" | "Message | Boolean" => json!(true),
        "Message" => match chat(sb, r, "chat_id") {
            Ok(c) => message(sb, r, c),
            Err(_) => message(
                sb,
                r,
                json!({"id": r.bot_id, "type": "private", "first_name": "Sandbox"}),
            ),
        },
        "MessageId" => json!({"message_id": sb.world.lock().new_message(r.bot_id, 0)}),
        "User" => sb.world.lock().bot(r.bot_id).user(),
        "Integer" => json!(0),
        "String" => json!("https://t.me/+sandbox"),
        r if r.starts_with("Array of") => json!([]),
        _ => json!({}),
    };
    ok(result)
}
