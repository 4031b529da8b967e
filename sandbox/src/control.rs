//! The control API, for tests and people writing bots offline:
//!
//! - `POST /control/updates` `{"bot_id": N, "update": {...}}` → `{"update_id": N}`
//! - `POST /control/faults` `{"method"?, "bot_id"?, "times"?, "action": {"kind": "status",
//!   "status": 429, "retry_after": 3} | {"kind": "status", "status": 502, "body": "<html>"} |
//!   {"kind": "delay", "ms": 500} | {"kind": "drop"}}`; `DELETE /control/faults`
//! - `GET /control/calls?bot_id=&method=` → the calls received, oldest first;
//!   `DELETE /control/calls`
//! - `POST /control/files` `{"bot_id": N, "size": N, "file_name"?, "seed"?}` → a document of
//!   `size` deterministic bytes ([`synthetic_chunk`]) in the world, as if the bot had been sent
//!   it: `{"file_id", "file_unique_id", "sha256", "size"}`. For files larger than any upload
//!   limit (a 1 GiB download test).
//! - `POST /control/chats` `{"id", "type": "group"|"supergroup"|"channel", "title", "username"?,
//!   "photos"?}` → a chat with a photo history of `photos`; the Bot API finds one with a
//!   username by `@username` (nothing else is found so).
//! - `POST /control/limits` `{"enabled": bool}` → Telegram's flood limits enforced or not
//!   ([`crate::limits`]: sends and edits over them get Telegram's 429 with `retry_after`).
//! - `POST /control/users` `{"id": N, "username"?, "first_name"?, "photos"?}` → a user the
//!   MTProto face resolves, with `photos` profile photos (at most 100);
//!   resolves by username
//! - `GET /control/mtproto` → `{"bytes_served": N, "sign_ins": N}` (bytes `upload.getFile`
//!   handed out; bot sign-ins accepted)
//! - `GET /control/health`

use crate::world::{Fault, RecordedCall};
use crate::{json_response, Sandbox};
use axum::body::Body;
use futures_util::TryStreamExt;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct NewFile {
    bot_id: i64,
    size: u64,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    seed: u64,
}

/// Chunk `index` (1 MiB each) of the synthetic content for `seed`: xorshift64 output, cheap to
/// regenerate anywhere (a test checks ranges against it without holding the file).
pub fn synthetic_chunk(seed: u64, index: u64) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let mut state =
        (seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

fn failed(e: std::io::Error) -> Response<Body> {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": e.to_string()}),
    )
}

/// `count` photos of `owner` (a user's profile photos, a chat's photo history; at most 100),
/// newest first: their file_unique_ids.
async fn new_photos(sb: &Sandbox, owner: i64, count: u32) -> std::io::Result<Vec<String>> {
    let mut made = Vec::new();
    for n in 0..count.min(100) {
        made.push(new_photo(sb, owner, n).await?);
    }
    made.reverse();
    Ok(made)
}

/// A profile photo of `user`, the `n`th it set: a small stored photo; its file_unique_id.
async fn new_photo(sb: &Sandbox, user: i64, n: u32) -> std::io::Result<String> {
    use sha2::Digest;
    let mut bytes = synthetic_chunk(user as u64 ^ 0x5eed, n as u64);
    bytes.truncate(2048 + n as usize);
    let path = sb.temp_path();
    tokio::fs::write(&path, &bytes).await?;
    let upload = crate::request::Upload {
        path,
        size: bytes.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        file_name: None,
        content_type: Some("image/jpeg".into()),
    };
    let stored = crate::files::store(
        sb,
        &upload,
        telegram::file_id::FileType::Photo,
        Default::default(),
    )
    .await?;
    Ok(stored.unique_id)
}

async fn new_file(sb: &Sandbox, f: NewFile) -> std::io::Result<Value> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let path = sb.temp_path();
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(&path).await?);
    let mut hasher = sha2::Sha256::new();
    let mut left = f.size;
    let mut index = 0;
    while left > 0 {
        let mut chunk = synthetic_chunk(f.seed, index);
        chunk.truncate(left.min(chunk.len() as u64) as usize);
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
        left -= chunk.len() as u64;
        index += 1;
    }
    out.flush().await?;
    let sha256 = hex::encode(hasher.finalize());
    sb.world.lock().bot(f.bot_id);
    let upload = crate::request::Upload {
        path,
        size: f.size,
        sha256: sha256.clone(),
        file_name: f.file_name.or_else(|| Some("synthetic.bin".into())),
        content_type: Some("application/octet-stream".into()),
    };
    let stored = crate::files::store(
        sb,
        &upload,
        telegram::file_id::FileType::Document,
        Default::default(),
    )
    .await?;
    Ok(json!({
        "file_id": crate::files::file_id(&stored),
        "file_unique_id": stored.unique_id,
        "sha256": sha256,
        "size": f.size,
    }))
}

#[derive(Deserialize)]
struct NewUpdate {
    bot_id: i64,
    update: Value,
}

async fn body_json<T: serde::de::DeserializeOwned>(
    req: Request<Body>,
) -> Result<T, Response<Body>> {
    let mut buf = Vec::new();
    let mut s = req.into_body().into_data_stream();
    while let Ok(Some(c)) = s.try_next().await {
        if buf.len() + c.len() > 16 * 1024 * 1024 {
            return Err(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "too large"}),
            ));
        }
        buf.extend_from_slice(&c);
    }
    serde_json::from_slice(&buf)
        .map_err(|e| json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})))
}

pub async fn handle(sb: &Sandbox, rest: &str, req: Request<Body>) -> Response<Body> {
    match (req.method().clone(), rest) {
        (Method::GET, "health") => json_response(StatusCode::OK, &json!({"ok": true})),
        (Method::POST, "updates") => match body_json::<NewUpdate>(req).await {
            Ok(u) => {
                let id = sb.world.push_update(u.bot_id, u.update);
                json_response(StatusCode::OK, &json!({"update_id": id}))
            }
            Err(resp) => resp,
        },
        (Method::POST, "faults") => match body_json::<Fault>(req).await {
            Ok(f) => {
                sb.world.lock().faults.push(f);
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(resp) => resp,
        },
        (Method::POST, "files") => match body_json::<NewFile>(req).await {
            Ok(f) => match new_file(sb, f).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": e.to_string()}),
                ),
            },
            Err(resp) => resp,
        },
        (Method::POST, "users") => match body_json::<crate::world::SandboxUser>(req).await {
            Ok(u) => {
                let (id, photos) = (u.id, u.photos);
                sb.world.lock().users.insert(id, u);
                match new_photos(sb, id, photos).await {
                    Ok(made) => sb.world.lock().profile_photos.insert(id, made),
                    Err(e) => return failed(e),
                };
                json_response(StatusCode::OK, &json!({"ok": true, "id": id}))
            }
            Err(resp) => resp,
        },
        (Method::POST, "chats") => match body_json::<PublicChat>(req).await {
            Ok(c) if c.is_valid() => {
                let id = c.id;
                let mut chat = json!({"id": id, "type": c.r#type, "title": c.title});
                if let Some(name) = &c.username {
                    chat["username"] = name.as_str().into();
                }
                sb.world.lock().public_chats.insert(id, chat);
                match new_photos(sb, id, c.photos).await {
                    Ok(made) => sb.world.lock().chat_photos.insert(id, made),
                    Err(e) => return failed(e),
                };
                json_response(StatusCode::OK, &json!({"ok": true, "id": id}))
            }
            Ok(_) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "a chat is a group (id -1 to -999999999999, no username), or a channel or supergroup (-100…)"}),
            ),
            Err(resp) => resp,
        },
        (Method::POST, "limits") => match body_json::<Value>(req).await {
            Ok(v) => {
                sb.limits.set_enabled(v["enabled"] == true);
                json_response(
                    StatusCode::OK,
                    &json!({"ok": true, "enabled": sb.limits.enabled()}),
                )
            }
            Err(resp) => resp,
        },
        (Method::GET, "mtproto") => {
            let w = sb.world.lock();
            json_response(
                StatusCode::OK,
                &json!({"bytes_served": w.mtproto_bytes_served, "sign_ins": w.mtproto_sign_ins}),
            )
        }
        (Method::DELETE, "faults") => {
            sb.world.lock().faults.clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        (Method::GET, "calls") => {
            let q: Vec<(String, String)> = req
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let bot = get("bot_id").and_then(|b| b.parse::<i64>().ok());
            let method = get("method");
            let calls: Vec<RecordedCall> = sb
                .world
                .lock()
                .calls
                .iter()
                .filter(|c| bot.is_none_or(|b| c.bot_id == b))
                .filter(|c| {
                    method
                        .as_deref()
                        .is_none_or(|m| c.method.eq_ignore_ascii_case(m))
                })
                .cloned()
                .collect();
            json_response(
                StatusCode::OK,
                &serde_json::to_value(calls).unwrap_or_default(),
            )
        }
        (Method::DELETE, "calls") => {
            sb.world.lock().calls.clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such control endpoint"}),
        ),
    }
}

/// A chat, as `POST /control/chats` takes it.
#[derive(serde::Deserialize)]
struct PublicChat {
    id: i64,
    r#type: String,
    title: String,
    #[serde(default)]
    username: Option<String>,
    /// How many photos its history has.
    #[serde(default)]
    photos: u32,
}

impl PublicChat {
    fn is_valid(&self) -> bool {
        match self.r#type.as_str() {
            "group" => self.id < 0 && self.id > -1_000_000_000_000 && self.username.is_none(),
            "channel" | "supergroup" => self.id <= -1_000_000_000_000,
            _ => false,
        }
    }
}
