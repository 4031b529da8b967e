//! `updates.raw` → `updates`: the updates processor. Drops the gateway's own traffic (updates
//! from the storage chat, where `upload<Type>` posts and deletes); keeps every other update,
//! of whatever kind, as it is. One record at a time, so a bot's order is kept.

use crate::{metrics, Deps, WebhookError};
use schemas::{Update, UpdateSource};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "updates";

/// Whether the gateway keeps `update` from the bot.
pub fn keeps(update: &Value, storage_chat: Option<i64>) -> bool {
    !storage_chat.is_some_and(|c| schemas::update::about_chat(update, c))
}

pub async fn run(
    deps: Deps,
    storage_chat: Option<i64>,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    let topics = [
        bus::topics::UPDATES_RAW.to_owned(),
        bus::topics::UPDATES.to_owned(),
    ];
    deps.bus.ensure_topics(&topics).await?;
    let consumer = deps.bus.subscribe(GROUP, &topics[..1]).await?;
    // In order: a batch is what is ready, and the next waits for it.
    let opts = bus::stage::Options {
        batch: 64,
        ..bus::stage::Options::sequential("updates-filter")
    };
    bus::stage::run(consumer, opts, shutdown, |records, _slot| {
        let bus = deps.bus.clone();
        async move {
            for record in &records {
                let Some(env) = bus::decode_or_skip::<Update>(record) else {
                    continue;
                };
                if env.payload.source == UpdateSource::GetUpdates {
                    // A bot's own getUpdates answer: on `updates.raw` for the record only, the
                    // bot has it already.
                } else if keeps(&env.payload.update, storage_chat) {
                    bus::publish_envelope(bus.as_ref(), bus::topics::UPDATES, &env).await?;
                } else {
                    metrics::UPDATES.with_label_values(&["filtered"]).inc();
                }
            }
            Ok::<(), WebhookError>(())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_storage_chat_is_dropped_and_unknown_kinds_kept() {
        let chat = -1001234;
        let post = json!({"update_id": 1, "channel_post": {"chat": {"id": chat}}});
        let member = json!({"update_id": 2, "my_chat_member": {"chat": {"id": chat}}});
        let query = json!({"update_id": 3, "callback_query": {"message": {"chat": {"id": chat}}}});
        for u in [&post, &member, &query] {
            assert!(!keeps(u, Some(chat)), "{u}");
            assert!(keeps(u, None));
        }
        let other = json!({"update_id": 4, "message": {"chat": {"id": 5}}});
        assert!(keeps(&other, Some(chat)));
        let unknown = json!({"update_id": 5, "kind_from_the_future": {"x": 1}});
        assert!(keeps(&unknown, Some(chat)));
    }
}
