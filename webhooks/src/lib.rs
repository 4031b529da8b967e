//! Webhooks the gateway keeps for bots (ENHANCED.md, "Updates and webhooks"), in three stages,
//! each a task of the role that owns it:
//!
//! - [`poll`] (ingest role): for every bot with a webhook in the store, or polling the gateway
//!   (a row without a URL), getUpdates from Telegram as the bot (its token sealed in the row),
//!   each update published to `updates.raw` before the offset moves past it (so a crash
//!   repeats, never loses). A polling bot nobody read for `poll_idle` is no longer polled.
//! - [`filter`] (processors role, group `updates`): `updates.raw` → `updates`, minus the
//!   gateway's own traffic (the storage chat); unknown update kinds pass as they are.
//! - [`deliver`] (egress role, group `webhooks`): each update kept in the store (once: a
//!   replayed record is not kept twice), then pushed to the bot's URL strictly in update_id
//!   order, with `X-Telegram-Bot-Api-Secret-Token`, retried with backoff while the bot's server
//!   fails; the last error is kept for getWebhookInfo. A JSON method call in the reply body is
//!   published to `calls` and executed like any call. A restart resumes from the store. Each
//!   batch kept is announced on `updates.kept`, which wakes the polling bots' getUpdates (the
//!   processors answer those from the store).
//!
//! setWebhook/deleteWebhook/getWebhookInfo themselves are answered by the processors
//! (`processors::webhooks`), which write the store rows these stages read.

pub mod deliver;
pub use deliver::reply_method;
pub mod filter;
pub mod hook;
pub mod poll;

use std::sync::Arc;

#[derive(Clone)]
pub struct Deps {
    pub bus: Arc<dyn bus::Bus>,
    /// Webhooks, their leases and kept updates: all these stages touch.
    pub store: Arc<dyn store::WebhookStore>,
    pub upstream: telegram::botapi::BotApi,
    pub sealer: schemas::Sealer,
    /// Where webhooks may be delivered (`--webhook-networks`), checked at every delivery.
    pub destinations: Arc<fetch::Destinations>,
    /// How long a polling bot may go without a getUpdates before the gateway stops polling
    /// Telegram for it (`--poll-idle`).
    pub poll_idle: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
}

/// How long a lease on a bot's webhook work lasts without renewal: another process takes the
/// bot over this long after its holder died.
pub(crate) const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Takes or renews this process's lease on `bot`'s webhook work; false when another process
/// holds it (or the store cannot say: then nobody should act twice).
pub(crate) async fn leased(deps: &Deps, owner: &str, bot: schemas::BotId) -> bool {
    let now = schemas::now_ms();
    match deps
        .store
        .lease_webhook(bot, owner, now, now + LEASE.as_millis() as i64)
        .await
    {
        Ok(granted) => granted,
        Err(error) => {
            tracing::warn!(%error, %bot, "could not take the webhook lease");
            false
        }
    }
}

pub(crate) mod metrics {
    use prometheus::{register_int_counter_vec, IntCounterVec};
    use std::sync::LazyLock;

    pub static UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
        register_int_counter_vec!(
            "telepipe_webhook_updates_total",
            "Updates through the webhook stages: polled (from Telegram), received (pushed by Telegram to /hook/), filtered (dropped as \
             the gateway's own), delivered (the bot's server took it), failed (a delivery \
             attempt that failed; it is retried).",
            &["what"]
        )
        .expect("metric registers once")
    });
}
