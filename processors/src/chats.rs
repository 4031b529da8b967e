//! The gateway's chat methods (ENHANCED.md, "Chats, users, messages") that need more than the
//! Bot API: getBackend.

use crate::passthrough::execute;
use crate::uploads::as_call;
use crate::Deps;
use schemas::{ApiError, Call, CallBody, Envelope, Response};
use serde_json::{json, Value};

/// getBackend: the Chat of the identity the gateway uses on MTProto for this bot (the bot
/// itself: it logs in as the bot), or else the storage chat.
pub(crate) async fn get_backend(deps: &Deps, env: &Envelope<Call>) -> Response {
    if deps.files.mtproto().is_some() {
        let me = execute(deps, &as_call(env, "getMe", CallBody::Empty)).await;
        let user = me
            .body
            .inline_bytes()
            .filter(|_| me.status == 200)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| v["result"].clone())
            .filter(Value::is_object);
        let Some(user) = user else {
            // Upstream's refusal (a revoked token, say) is the bot's answer.
            return me;
        };
        let mut chat =
            json!({"id": user["id"], "type": "private", "first_name": user["first_name"]});
        for field in ["last_name", "username"] {
            if let Some(v) = user.get(field).filter(|v| v.is_string()) {
                chat[field] = v.clone();
            }
        }
        return Response::gateway_json(200, &json!({"ok": true, "result": chat}));
    }
    if let Some(storage) = deps.files.storage_chat() {
        return execute(
            deps,
            &as_call(
                env,
                "getChat",
                CallBody::Json {
                    value: json!({ "chat_id": storage }),
                },
            ),
        )
        .await;
    }
    Response::from_error(&ApiError::bad_request(
        "getBackend needs MTProto (TELEGRAM_API_ID and TELEGRAM_API_HASH) or a storage chat (--storage-chat-id)",
    ))
}
