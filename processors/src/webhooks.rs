//! setWebhook, deleteWebhook, getWebhookInfo and getUpdates as the gateway keeps webhooks
//! (ENHANCED.md, "Updates and webhooks"): the bot's URL may be plain http, any port, a private
//! address, with a self-signed certificate. The gateway keeps it in the store (with the bot's
//! sealed token, to poll Telegram as the bot) and turns Telegram's own webhook off, so that the
//! `webhooks` crate's poller can fetch the updates and its deliverer push them to the URL.

use crate::cmd::{DeleteWebhook, SetWebhook};
use crate::failures;
use crate::passthrough::execute;
use crate::uploads::as_call;
use crate::Deps;
use schemas::{ApiError, Call, CallBody, Envelope, Response};
use serde_json::{json, Value};
use store::WebhookRow;

fn answer(v: &Value) -> Response {
    Response::gateway_json(200, v)
}

/// What a long poll cut short gets: no updates (nothing was confirmed; the bot asks again).
pub fn no_updates() -> Response {
    answer(&serde_json::json!({"ok": true, "result": []}))
}

fn bad(description: &str) -> Response {
    Response::from_error(&ApiError::bad_request(description))
}

fn store_failed(error: store::StoreError) -> Response {
    failures::store("the webhook could not be kept")(error).into()
}

pub async fn set_webhook(deps: &Deps, env: &Envelope<Call>, set: SetWebhook) -> Response {
    let call = &env.payload;
    if let Err(why) = deps.webhook_destinations.check_url(&set.parsed).await {
        return bad(&format!("bad webhook: {why}"));
    }
    let certificate = match &set.certificate {
        Some(blob) => match read_blob(deps, blob).await {
            Ok(Some(pem)) => Some(pem),
            Ok(None) => return bad("bad webhook: the certificate could not be read"),
            Err(lost) => return lost.into(),
        },
        None => None,
    };
    let Some(token_sealed) = call.token.clone() else {
        return Response::from_error(&ApiError::unauthorized());
    };
    let bot_id = env.header.bot_id;
    // With a public address Telegram pushes to the gateway's hook for this bot; without one,
    // Telegram keeps no webhook and the gateway polls it instead.
    let mut upstream_call = json!({});
    if set.drop_pending_updates {
        upstream_call["drop_pending_updates"] = true.into();
    }
    let method = match &deps.public_url {
        Some(public) => {
            let secret = deps.sealer.hook_secret(bot_id);
            upstream_call["url"] = format!("{public}/hook/{bot_id}/{secret}").into();
            upstream_call["secret_token"] = secret.into();
            upstream_call["max_connections"] = set.max_connections.into();
            if let Some(a) = &set.allowed_updates {
                upstream_call["allowed_updates"] = serde_json::from_str(a).unwrap_or_default();
            }
            "setWebhook"
        }
        None => "deleteWebhook",
    };
    let upstream = execute(
        deps,
        &as_call(
            env,
            method,
            CallBody::Json {
                value: upstream_call,
            },
        ),
    )
    .await;
    if upstream.status != 200 {
        return upstream;
    }
    if set.drop_pending_updates {
        if let Err(e) = deps.store.delete_webhook(bot_id, true).await {
            return store_failed(e);
        }
    }
    let row = WebhookRow {
        bot_id,
        url: set.url,
        secret_token: set.secret_token,
        max_connections: set.max_connections,
        allowed_updates: set.allowed_updates,
        certificate,
        token_sealed: token_sealed.0,
        test_env: call.test_env,
        telegram_hook: deps.public_url.is_some(),
        poll_offset: 0,
        last_error_date: None,
        last_error_message: None,
    };
    if let Err(e) = deps.store.put_webhook(&row).await {
        return store_failed(e);
    }
    // As at Telegram, a getUpdates waiting for this bot ends ("terminated by setWebhook").
    deps.polls.end(bot_id);
    tracing::info!(bot_id = %bot_id, "webhook set");
    answer(&json!({"ok": true, "result": true, "description": "Webhook was set"}))
}

/// The certificate's PEM; `None` when it is not text (the bot's fault), an error when the
/// upload kept for it cannot be read back (the gateway's).
async fn read_blob(deps: &Deps, blob: &schemas::BlobRef) -> Result<Option<String>, ApiError> {
    use tokio::io::AsyncReadExt;
    let mut reader = deps
        .blobs
        .open(blob)
        .await
        .map_err(failures::lost("the certificate"))?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .await
        .map_err(failures::lost("the certificate"))?;
    Ok(String::from_utf8(out).ok())
}

/// The bot's own deleteWebhook goes upstream as it came (a webhook set on Telegram directly
/// goes too); the gateway's webhook, if any, is removed.
pub async fn delete_webhook(deps: &Deps, env: &Envelope<Call>, delete: DeleteWebhook) -> Response {
    let bot_id = env.header.bot_id;
    let had = match deps.store.webhook(bot_id).await {
        Ok(w) => w.is_some_and(|w| !w.polling()),
        Err(e) => return store_failed(e),
    };
    let drop = delete.drop_pending_updates;
    let upstream = if delete.as_sent {
        execute(deps, env).await
    } else {
        let off = json!({ "drop_pending_updates": drop });
        execute(
            deps,
            &as_call(env, "deleteWebhook", CallBody::Json { value: off }),
        )
        .await
    };
    if !had {
        // A polling bot (or one no longer polled) has no webhook to remove; what it asked to
        // drop is dropped: the gateway keeps its updates, not Telegram.
        if drop && upstream.status == 200 {
            if let Err(e) = deps.store.confirm_updates(bot_id, i64::MAX).await {
                return store_failed(e);
            }
        }
        return upstream;
    }
    if let Err(e) = deps.store.delete_webhook(bot_id, drop).await {
        return store_failed(e);
    }
    tracing::info!(bot_id = %bot_id, drop, "webhook deleted");
    answer(&json!({"ok": true, "result": true, "description": "Webhook was deleted"}))
}

/// The gateway's webhook as Telegram would describe it; without one, upstream's answer.
pub async fn webhook_info(deps: &Deps, env: &Envelope<Call>) -> Response {
    let bot_id = env.header.bot_id;
    let w = match deps.store.webhook(bot_id).await {
        Ok(Some(w)) => w,
        Ok(None) => return with_kept(deps, bot_id, execute(deps, env).await).await,
        Err(e) => return store_failed(e),
    };
    let pending = match deps.store.pending_count(bot_id).await {
        Ok(n) => n,
        Err(e) => return store_failed(e),
    };
    if w.polling() {
        // No webhook: Telegram's answer for a bot that polls, with the gateway's count.
        let mut info = json!({
            "url": "",
            "has_custom_certificate": false,
            "pending_update_count": pending,
        });
        if let Some(a) = w
            .allowed_updates
            .and_then(|a| serde_json::from_str::<Value>(&a).ok())
        {
            info["allowed_updates"] = a;
        }
        return answer(&json!({"ok": true, "result": info}));
    }
    let mut info = json!({
        "url": w.url,
        "has_custom_certificate": w.certificate.is_some(),
        "pending_update_count": pending,
        "max_connections": w.max_connections,
    });
    if let Some(a) = w
        .allowed_updates
        .and_then(|a| serde_json::from_str::<Value>(&a).ok())
    {
        info["allowed_updates"] = a;
    }
    if let (Some(date), Some(message)) = (w.last_error_date, w.last_error_message) {
        info["last_error_date"] = date.into();
        info["last_error_message"] = message.into();
    }
    answer(&json!({"ok": true, "result": info}))
}

/// Upstream's getWebhookInfo for a bot the gateway neither keeps a webhook for nor polls, with
/// the updates the gateway still keeps for it (polled before it went idle) in the count.
async fn with_kept(deps: &Deps, bot_id: schemas::BotId, upstream: Response) -> Response {
    let kept = match deps.store.pending_count(bot_id).await {
        Ok(n) if n > 0 => n,
        _ => return upstream,
    };
    let Some(mut body) = upstream
        .body
        .inline_bytes()
        .filter(|_| upstream.status == 200)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return upstream;
    };
    let Some(count) = body["result"]["pending_update_count"].as_u64() else {
        return upstream;
    };
    body["result"]["pending_update_count"] = (count + kept).into();
    answer(&body)
}
