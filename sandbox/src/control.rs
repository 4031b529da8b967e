//! The control API, for tests and people writing bots offline:
//!
//! - `POST /control/updates` `{"bot_id": N, "update": {...}}` → `{"update_id": N}`
//! - `POST /control/faults` `{"method"?, "bot_id"?, "times"?, "action": {"kind": "status",
//!   "status": 429, "retry_after": 3} | {"kind": "status", "status": 502, "body": "<html>"} |
//!   {"kind": "delay", "ms": 500} | {"kind": "drop"}}`; `DELETE /control/faults`
//! - `GET /control/calls?bot_id=&method=` → the calls received, oldest first;
//!   `DELETE /control/calls`
//! - `GET /control/health`

use crate::world::{Fault, RecordedCall};
use crate::{json_response, Sandbox};
use axum::body::Body;
use futures_util::TryStreamExt;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

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
