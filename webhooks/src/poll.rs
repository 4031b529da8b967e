//! The gateway's own getUpdates for bots whose webhook it keeps, and for bots that poll the
//! gateway: one task per bot, started when its row appears, ended when it goes (a polling bot's
//! row goes when nobody read its updates for `poll_idle`).

use crate::{metrics, Deps, WebhookError};
use schemas::{BotId, Envelope, SealedToken, Update, UpdateSource};
use std::collections::HashMap;
use std::time::Duration;
use telegram::botapi::UpstreamBody;
use tokio_util::sync::CancellationToken;

/// How long each getUpdates waits at Telegram, at most (5 s less at least).
const LONG_POLL: u64 = 25;
/// How often the store is read for webhooks set or removed.
const SCAN_EVERY: Duration = Duration::from_millis(500);

pub async fn run(
    deps: Deps,
    producer: String,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    deps.bus
        .ensure_topics(&[bus::topics::UPDATES_RAW.to_owned()])
        .await?;
    let mut running: HashMap<BotId, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, t| !t.is_finished());
        match deps.store.webhooks().await {
            Ok(rows) => {
                // Bots whose updates Telegram pushes to the gateway's hook are not polled.
                for row in rows.into_iter().filter(|r| !r.telegram_hook) {
                    running.entry(row.bot_id).or_insert_with(|| {
                        let (deps, producer, stop) =
                            (deps.clone(), producer.clone(), shutdown.child_token());
                        tokio::spawn(poll_bot(deps, producer, row.bot_id, stop))
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "could not read webhooks"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
    for (_, t) in running {
        let _ = t.await;
    }
    Ok(())
}

async fn poll_bot(deps: Deps, producer: String, bot_id: BotId, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    // Not on the first round: the getUpdates that made the row writes its reader's time just
    // after it, and an older reader row may still say the bot was idle.
    let mut first = true;
    let mut renewed: Option<tokio::time::Instant> = None;
    loop {
        let check_idle = !std::mem::take(&mut first);
        let row = match deps.store.webhook(bot_id).await {
            Ok(Some(row)) if row.polling() && check_idle && idle(&deps, bot_id).await => {
                // Telegram keeps what comes meanwhile (a day), and the bot's next getUpdates
                // starts polling again; what the gateway kept stays kept.
                tracing::info!(%bot_id, idle_s = deps.poll_idle.as_secs(), "no getUpdates from this bot for a while: no longer polling Telegram for it");
                if let Err(error) = deps.store.delete_webhook(bot_id, false).await {
                    tracing::warn!(%error, %bot_id, "could not stop polling for an idle bot");
                }
                metrics::UPDATES.with_label_values(&["idle_stops"]).inc();
                return;
            }
            Ok(Some(row)) if !row.telegram_hook => row,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, %bot_id, "could not read the webhook");
                if pause(&stop, backoff).await {
                    return;
                }
                continue;
            }
        };
        // Another process polls for this bot while it holds the lease. Renewed only when half
        // of it is gone: with thousands of bots a write per round would queue before every
        // call's record.
        if renewed.is_none_or(|at| at.elapsed() >= crate::LEASE / 2) {
            if !crate::leased(&deps, &producer, bot_id).await {
                renewed = None;
                if pause(&stop, crate::LEASE / 2).await {
                    return;
                }
                continue;
            }
            renewed = Some(tokio::time::Instant::now());
        }
        let token = match deps
            .sealer
            .open(bot_id, &SealedToken(row.token_sealed.clone()))
        {
            Ok(t) => t,
            Err(error) => {
                tracing::error!(%error, %bot_id, "the webhook's token does not open; is TELEPIPE_SEAL_KEY the same on every role?");
                if pause(&stop, Duration::from_secs(30)).await {
                    return;
                }
                continue;
            }
        };
        // Spread over a few seconds, so that thousands of bots polled since the same moment
        // do not all come back in the same one.
        let wait = LONG_POLL - 5 + rand::random::<u64>() % 6;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("offset", &row.poll_offset.to_string());
            q.append_pair("timeout", &wait.to_string());
            if let Some(a) = &row.allowed_updates {
                q.append_pair("allowed_updates", a);
            }
            q.finish()
        };
        let call = deps.upstream.call(
            &token,
            row.test_env,
            "GET",
            "getUpdates",
            &query,
            UpstreamBody::Empty,
            Duration::from_secs(wait + 10),
        );
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = call => a,
        };
        let updates = match answer {
            Ok(a) if a.status == 200 => serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["result"].as_array().cloned())
                .unwrap_or_default(),
            Ok(a) => {
                tracing::warn!(%bot_id, status = a.status, "getUpdates for a webhook refused");
                if pause(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
            Err(error) => {
                tracing::warn!(%bot_id, %error, "getUpdates for a webhook failed");
                if pause(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        let mut next = row.poll_offset;
        for value in updates {
            let Some(update) = Update::from_value(value, UpdateSource::Poll) else {
                continue;
            };
            let id = update.update_id;
            let env = Envelope::new(schemas::CallId::new(), bot_id, &producer, None, update);
            // Published before the offset moves past it: a crash here repeats it, and the
            // deliverer keeps each update_id once.
            if let Err(error) =
                bus::publish_envelope(deps.bus.as_ref(), bus::topics::UPDATES_RAW, &env).await
            {
                tracing::warn!(%error, %bot_id, "could not publish an update; polling again");
                break;
            }
            metrics::UPDATES.with_label_values(&["polled"]).inc();
            next = next.max(id + 1);
        }
        if next != row.poll_offset {
            if let Err(error) = deps.store.set_poll_offset(bot_id, next).await {
                tracing::warn!(%error, %bot_id, "could not keep the poll offset");
            }
        }
    }
}

/// Whether nobody read a polling bot's updates for `poll_idle` (a store that cannot say: not
/// idle).
async fn idle(deps: &Deps, bot_id: BotId) -> bool {
    let Ok(readers) = deps.store.readers(bot_id).await else {
        return false;
    };
    let last = readers.iter().map(|r| r.read_ms).max().unwrap_or(0);
    // A row without readers was made by a getUpdates that has not written its reader yet.
    !readers.is_empty() && schemas::now_ms() - last > deps.poll_idle.as_millis() as i64
}

/// Sleeps `d` unless stopped first; true when stopped.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
