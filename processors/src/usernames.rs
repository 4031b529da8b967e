//! `@username` for users and bots (ENHANCED.md, "Usernames everywhere"). The Bot API knows
//! public channels and supergroups by username, but not users or bots: a `chat_id`, `user_id`,
//! `from_chat_id` or `sender_chat_id` given as `@name` is resolved over MTProto as the bot
//! (`contacts.resolveUsername`) and, when it names a user or a bot, replaced by its id before the
//! call goes upstream. What MTProto resolves to a chat, or not at all, is left as the bot wrote
//! it: upstream knows public chats, and answers `400 Bad Request: chat not found` for the rest.
//!
//! Resolutions are kept per bot in the store ([`store::BotStore::put_peer`]): Telegram limits
//! `contacts.resolveUsername` hard, and a bot that sends to `@name` all day must not ask each
//! time. Without MTProto the call goes as it came.

use crate::passthrough::open_token;
use crate::Deps;
use schemas::{Call, CallBody, Envelope, Response};
use serde_json::Value;
use std::time::Duration;

/// The parameters that name a chat or a user.
const PARAMS: [&str; 4] = ["chat_id", "user_id", "from_chat_id", "sender_chat_id"];

/// How long a resolution is used: usernames change hands rarely, but they do.
const KEPT: Duration = Duration::from_secs(3600);

/// How long "no such username" is believed: a name may be taken any time.
const UNKNOWN_KEPT: Duration = Duration::from_secs(300);

/// Whether the call may name someone by username: a look at the raw call, so the common call
/// pays no parameter parse.
fn may_name(call: &Call) -> bool {
    let at = |s: &str| s.starts_with('@');
    call.query.contains('@')
        || call.query.contains("%40")
        || match &call.body {
            CallBody::Json {
                value: Value::Object(m),
            } => PARAMS
                .iter()
                .any(|p| m.get(*p).and_then(Value::as_str).is_some_and(at)),
            CallBody::Form { pairs } => pairs
                .iter()
                .any(|(k, v)| PARAMS.contains(&k.as_str()) && at(v)),
            CallBody::Multipart { parts } => parts.iter().any(|p| {
                matches!(p, schemas::Part::Text { name, value }
                    if PARAMS.contains(&name.as_str()) && at(value))
            }),
            _ => false,
        }
}

/// The call with every user's and bot's `@username` replaced by its id; `None` when nothing
/// needed replacing (the call goes as it came).
pub(crate) async fn resolve(deps: &Deps, env: &Envelope<Call>) -> Result<Option<Call>, Response> {
    let call = &env.payload;
    if !may_name(call) {
        return Ok(None);
    }
    if deps.files.mtproto().is_none() {
        return Ok(None);
    }
    let params = call.params();
    let named: Vec<(&str, String)> = PARAMS
        .iter()
        .filter_map(|p| {
            let v = params.get(*p)?.as_str()?.trim();
            let name = v.strip_prefix('@').filter(|n| !n.is_empty())?;
            Some((*p, name.to_owned()))
        })
        .collect();
    if named.is_empty() {
        return Ok(None);
    }
    let token = open_token(deps, env)?;
    let bot = env.header.bot_id;
    let mut out: Option<Call> = None;
    for (param, name) in named {
        // Upstream decides what the gateway could not resolve, as without it.
        let Some(peer) = peer_id(deps, &token, bot, &name).await else {
            continue;
        };
        // Users and bots only: a chat's username is upstream's to read.
        if peer > 0 {
            out.get_or_insert_with(|| call.clone())
                .set_param(param, &peer.to_string());
        }
    }
    Ok(out)
}

/// What `name` (with or without its `@`) is for this bot: a user's or bot's id (positive), a
/// chat's (negative), or 0 for nobody; from the store while kept, else resolved over MTProto
/// and kept. `None` when it cannot be told (no MTProto, or MTProto failed).
pub(crate) async fn peer_id(
    deps: &Deps,
    token: &schemas::BotToken,
    bot: schemas::BotId,
    name: &str,
) -> Option<i64> {
    let name = name.trim().trim_start_matches('@');
    if name.is_empty() {
        return Some(0);
    }
    match deps.store.peer(bot, name).await {
        Ok(Some(id)) => return Some(id),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "could not look up a resolved username"),
    }
    let mtproto = deps.files.mtproto()?;
    let (id, kept) = match mtproto.resolve_username(token, name).await {
        Ok(Some(peer)) => (peer.chat_id, KEPT),
        Ok(None) => (0, UNKNOWN_KEPT),
        Err(error) => {
            tracing::warn!(%error, "could not resolve a username over MTProto");
            crate::metrics::USERNAMES
                .with_label_values(&["failed"])
                .inc();
            return None;
        }
    };
    crate::metrics::USERNAMES
        .with_label_values(&["resolved"])
        .inc();
    let expires = schemas::now_ms() + kept.as_millis() as i64;
    if let Err(error) = deps.store.put_peer(bot, name, id, expires).await {
        tracing::warn!(%error, "could not keep a resolved username");
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_may_name_someone_are_looked_at() {
        let call = |query: &str, body: CallBody| Call {
            query: query.into(),
            body,
            ..crate::cmd::tests::call("sendMessage", "")
        };
        assert!(!may_name(&call("chat_id=1&text=hi", CallBody::Empty)));
        assert!(may_name(&call("chat_id=%40alice", CallBody::Empty)));
        assert!(may_name(&call("chat_id=@alice", CallBody::Empty)));
        assert!(may_name(&call(
            "",
            CallBody::Json {
                value: serde_json::json!({"chat_id": "@alice", "text": "x"})
            }
        )));
        assert!(!may_name(&call(
            "",
            CallBody::Json {
                value: serde_json::json!({"chat_id": 1, "text": "@alice"})
            }
        )));
        assert!(may_name(&call(
            "",
            CallBody::Form {
                pairs: vec![("user_id".into(), "@bob".into())]
            }
        )));
    }
}
