//! `POST /hook/<bot_id>/<secret>`: Telegram pushing a bot's update to the gateway (set up by
//! setWebhook when `--public-url` is given). The path's secret and Telegram's
//! `X-Telegram-Bot-Api-Secret-Token` must both be the bot's hook secret (HMAC under the cluster
//! key); the update is published to `updates.raw` before Telegram gets its 200, so an update
//! Telegram saw accepted is on the bus.

use crate::{metrics, Deps};
use schemas::{ApiError, BotId, Envelope, Update, UpdateSource};

/// Updates are small; anything this big is not one.
const MAX_UPDATE: usize = 1024 * 1024;

/// What to answer Telegram: a status and a Bot API-shaped body.
pub struct HookAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

fn error(e: &ApiError) -> HookAnswer {
    HookAnswer {
        status: e.status(),
        body: e.to_json(),
    }
}

/// Handles one push: `path` is the request path, `secret_header` Telegram's header.
pub async fn receive(
    deps: &Deps,
    producer: &str,
    path: &str,
    secret_header: Option<&str>,
    body: &[u8],
) -> HookAnswer {
    let mut parts = path.trim_start_matches("/hook/").splitn(2, '/');
    let bot = parts.next().and_then(|b| b.parse::<i64>().ok()).map(BotId);
    let (Some(bot), Some(secret)) = (bot, parts.next()) else {
        return error(&ApiError::not_found());
    };
    let want = deps.sealer.hook_secret(bot);
    if secret != want || secret_header != Some(want.as_str()) {
        tracing::warn!(%bot, "a hook push with a wrong secret");
        return error(&ApiError::new(403, "Forbidden: wrong secret"));
    }
    if body.len() > MAX_UPDATE {
        return error(&ApiError::too_large());
    }
    let Some(update) = serde_json::from_slice(body)
        .ok()
        .and_then(|v| Update::from_value(v, UpdateSource::Hook))
    else {
        return error(&ApiError::bad_request(
            "an update object with update_id expected",
        ));
    };
    let env = Envelope::new(schemas::CallId::new(), bot, producer, None, update);
    match bus::publish_envelope(deps.bus.as_ref(), bus::topics::UPDATES_RAW, &env).await {
        Ok(()) => {
            metrics::UPDATES.with_label_values(&["received"]).inc();
            HookAnswer {
                status: 200,
                body: b"{}".to_vec(),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not publish a pushed update");
            // Telegram retries what is not acknowledged.
            error(&ApiError::internal("the update could not be kept"))
        }
    }
}
