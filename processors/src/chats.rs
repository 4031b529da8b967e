//! The gateway's chat methods (ENHANCED.md, "Chats, users, messages") that need more than the
//! Bot API: getBackend, getProfilePhotos, getChatByFile, getMessage.

use crate::cmd::{GetMessage, GetProfilePhotos};
use crate::failures;
use crate::passthrough::execute;
use crate::uploads::{as_call, text};
use crate::Deps;
use schemas::{ApiError, BotToken, Call, CallBody, Envelope, Response};
use serde_json::{json, Value};
use telegram::file_id::FileId;
use telegram::mtproto::tl;

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

/// The chat the first of `params` names, as an id: a number, or the @username of a public
/// chat (users' and bots' were made ids before the command ran); else `400 chat not found`.
async fn chat_named(
    deps: &Deps,
    token: &BotToken,
    env: &Envelope<Call>,
    params: &[&str],
) -> Result<i64, Response> {
    let given = env.payload.params();
    let raw = params
        .iter()
        .find_map(|p| given.get(*p))
        .map(text)
        .unwrap_or_default();
    let id = match raw.trim().parse::<i64>() {
        Ok(id) => Some(id),
        Err(_) => crate::usernames::peer_id(deps, token, env.header.bot_id, &raw).await,
    };
    id.filter(|id| *id != 0)
        .ok_or_else(|| Response::from_error(&ApiError::bad_request("chat not found")))
}

/// getProfilePhotos: a user's profile photos, or a group's, supergroup's or channel's photo
/// history, as UserProfilePhotos, each photo's sizes smallest first, with file ids this bot
/// can use (getFile takes them).
pub(crate) async fn get_profile_photos(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    which: GetProfilePhotos,
) -> Response {
    let Some(mtproto) = deps.files.mtproto() else {
        return failures::needs_mtproto("getProfilePhotos").into();
    };
    let not_found = || Response::from_error(&ApiError::bad_request("chat not found"));
    let id = match chat_named(deps, &token, env, &["chat_id", "user_id"]).await {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    // A user's profile photos; a chat's photo history.
    let found = if id > 0 {
        mtproto
            .profile_photos(&token, id, which.offset, which.limit)
            .await
    } else {
        mtproto
            .chat_photos(&token, id, which.offset, which.limit)
            .await
    };
    match found {
        Ok((count, photos)) => {
            let photos: Vec<Value> = photos
                .iter()
                .filter_map(|p| match p {
                    tl::enums::Photo::Photo(p) => {
                        Some(Value::Array(telegram::message::photo_sizes(p)))
                    }
                    tl::enums::Photo::Empty(_) => None,
                })
                .collect();
            Response::gateway_json(
                200,
                &json!({"ok": true, "result": {"total_count": count, "photos": photos}}),
            )
        }
        Err(e) if e.is_bad_request() => not_found(),
        Err(e) => failures::mtproto("getProfilePhotos")(e).into(),
    }
}

/// getChatByFile: Telegram does not tell who uploaded a file (a sticker set's creator
/// included: its `creator` flag says only whether the asking account made it). The gateway
/// answers what it can say, never a guess.
pub(crate) async fn get_chat_by_file(_deps: &Deps, env: &Envelope<Call>) -> Response {
    let params = env.payload.params();
    let Some(id) = params.get("file_id").map(text).filter(|s| !s.is_empty()) else {
        return Response::from_error(&ApiError::bad_request("file_id is empty"));
    };
    if FileId::decode(id.trim()).is_err() {
        return Response::from_error(&ApiError::bad_request(
            "wrong file identifier/HTTP URL specified",
        ));
    }
    Response::from_error(&ApiError::bad_request(
        "the uploader of this file cannot be determined",
    ))
}

/// getMessage: the message read back over MTProto as the bot, as the Bot API's Message (with
/// the message it replies to, one level deep, as the Bot API shows it).
pub(crate) async fn get_message(
    deps: &Deps,
    env: &Envelope<Call>,
    token: BotToken,
    which: GetMessage,
) -> Response {
    let Some(mtproto) = deps.files.mtproto() else {
        return failures::needs_mtproto("getMessage").into();
    };
    let not_found = |what: &str| Response::from_error(&ApiError::bad_request(what));
    let chat = match chat_named(deps, &token, env, &["chat_id"]).await {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let read = |id: i32| {
        let mtproto = mtproto.clone();
        let token = token.clone();
        async move {
            let (messages, named) = mtproto.get_messages(&token, chat, &[id]).await?;
            // Private chats and basic groups share one numbering per account: a message of
            // another chat is not this one's.
            let found = messages.into_iter().find_map(|m| match m {
                tl::enums::Message::Message(m)
                    if telegram::message::chat_id(&m.peer_id) == chat =>
                {
                    Some(m)
                }
                _ => None,
            });
            Ok::<_, telegram::mtproto::MtprotoError>(found.map(|m| (m, named)))
        }
    };
    let (message, named) = match read(which.message_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found("message not found"),
        Err(e) if e.is_bad_request() => return not_found("chat not found"),
        Err(e) => return failures::mtproto("getMessage")(e).into(),
    };
    let reply = match telegram::message::reply_to_id(&message) {
        Some(id) => match read(id).await {
            Ok(Some((m, n))) => Some(telegram::message::message(&m, &n, None)),
            // Deleted since, or unreadable: shown without it, as the Bot API does.
            _ => None,
        },
        None => None,
    };
    let result = telegram::message::message(&message, &named, reply);
    Response::gateway_json(200, &json!({"ok": true, "result": result}))
}
