//! Pushes updates to bots' webhooks: every update from `updates` is kept in the store first
//! (once per update_id), then one worker per bot posts its pending updates strictly in
//! update_id order. A failure (connection, non-2xx, timeout) is kept as the webhook's last
//! error and retried with exponential backoff (1 s doubling to 60 s, cut short only by a new
//! URL or certificate); nothing moves on until the bot's server takes the update, and a
//! restart resumes from the store.

use crate::poll::pause;
use crate::{metrics, Deps, WebhookError};
use schemas::{BotId, Call, CallBody, Envelope, SealedToken, Update};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::WebhookRow;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "webhooks";
const SCAN_EVERY: Duration = Duration::from_millis(500);
const POST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Pending updates a bot's worker reads at once (the webhook row is read again after them).
const PER_READ: usize = 16;
/// Records taken off the bus at once when they are ready.
const BATCH: usize = 512;

struct Worker {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(
    deps: Deps,
    producer: String,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    let topics = [bus::topics::UPDATES.to_owned()];
    deps.bus
        .ensure_topics(&[
            bus::topics::UPDATES.to_owned(),
            bus::topics::UPDATES_KEPT.to_owned(),
        ])
        .await?;
    let consumer = deps.bus.subscribe(GROUP, &topics).await?;
    let workers = Workers {
        map: Arc::default(),
        deps: deps.clone(),
        producer,
        shutdown: shutdown.clone(),
        // One connection pool for every webhook without a certificate of its own.
        shared: client_with(None, &deps.destinations),
    };
    // Webhooks set (or set again) since the last look: their workers, and pending updates
    // left by a restart.
    let scan = tokio::spawn({
        let workers = workers.clone();
        let stop = shutdown.clone();
        async move {
            let mut every = tokio::time::interval(SCAN_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {
                        workers.sweep();
                        if let Ok(rows) = workers.deps.store.webhooks().await {
                            for row in rows.iter().filter(|r| !r.polling()) {
                                workers.wake(row.bot_id);
                            }
                        }
                    }
                }
            }
        }
    });
    // In order, whatever is ready at once, so the store writes it in one transaction.
    let opts = bus::stage::Options {
        batch: BATCH,
        ..bus::stage::Options::sequential("webhook-delivery")
    };
    let result = bus::stage::run(consumer, opts, shutdown.clone(), |records, slot| {
        let workers = workers.clone();
        let shutdown = shutdown.clone();
        async move {
            let updates: Vec<Envelope<Update>> = records
                .iter()
                .filter_map(bus::decode_or_skip::<Update>)
                .collect();
            // Kept before the offsets are committed: a crash repeats the records, and the
            // store keeps each update_id once.
            let rows: Vec<_> = updates
                .iter()
                .map(|e| {
                    (
                        e.header.bot_id,
                        e.payload.update_id,
                        e.payload.update.to_string(),
                    )
                })
                .collect();
            while let Err(error) = workers.deps.store.put_updates(&rows).await {
                tracing::warn!(%error, "could not keep updates; retrying");
                if pause(&shutdown, Duration::from_secs(1)).await {
                    // Stopping with the updates not kept: not committed, so they come again.
                    slot.abandon();
                    return Ok(());
                }
            }
            for env in &updates {
                workers.wake(env.header.bot_id);
            }
            announce(&workers.deps, &workers.producer, &updates).await;
            Ok::<(), WebhookError>(())
        }
    })
    .await;
    let _ = scan.await;
    for w in workers.take_all() {
        let _ = w.task.await;
    }
    result
}

/// Tells the processors which bots' updates were just kept: one record per bot of the batch,
/// which wakes its waiting getUpdates. Best effort: a waiting poll that misses it still ends
/// at its timeout, and the next one reads the store.
async fn announce(deps: &Deps, producer: &str, updates: &[Envelope<Update>]) {
    let mut last: HashMap<BotId, i64> = HashMap::new();
    for env in updates {
        let id = last.entry(env.header.bot_id).or_insert(i64::MIN);
        *id = (*id).max(env.payload.update_id);
    }
    for (bot, last_update_id) in last {
        let kept = Envelope::new(
            schemas::CallId::new(),
            bot,
            producer,
            None,
            schemas::UpdatesKept { last_update_id },
        );
        if let Err(error) =
            bus::publish_envelope(deps.bus.as_ref(), bus::topics::UPDATES_KEPT, &kept).await
        {
            tracing::warn!(%error, %bot, "could not announce kept updates");
        }
    }
}

/// The bots' workers (one each, started on first need), shared by the stage and the scan.
#[derive(Clone)]
struct Workers {
    map: Arc<std::sync::Mutex<HashMap<BotId, Worker>>>,
    deps: Deps,
    producer: String,
    shutdown: CancellationToken,
    shared: reqwest::Client,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BotId, Worker>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the bot's worker, starting it if it has none.
    fn wake(&self, bot: BotId) {
        let mut map = self.lock();
        let w = map.entry(bot).or_insert_with(|| {
            let wake = Arc::new(Notify::new());
            let task = tokio::spawn(deliver_bot(
                self.deps.clone(),
                self.producer.clone(),
                bot,
                wake.clone(),
                self.shutdown.child_token(),
                self.shared.clone(),
            ));
            Worker { wake, task }
        });
        w.wake.notify_one();
    }

    /// Forgets workers that ended (their webhook was deleted).
    fn sweep(&self) {
        self.lock().retain(|_, w| !w.task.is_finished());
    }

    fn take_all(&self) -> Vec<Worker> {
        self.lock().drain().map(|(_, w)| w).collect()
    }
}

/// The HTTP client for webhooks: with a bot's own certificate trusted, when it gave one.
fn client_with(pem: Option<&str>, destinations: &Arc<fetch::Destinations>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // Names are checked again as the connection resolves them (DNS can change).
        .dns_resolver(Arc::new(fetch::Guard(destinations.clone())));
    if let Some(pem) = pem {
        match reqwest::Certificate::from_pem(pem.as_bytes()) {
            Ok(cert) => b = b.add_root_certificate(cert),
            Err(error) => tracing::warn!(%error, "a webhook's certificate does not parse"),
        }
    }
    b.build().unwrap_or_default()
}

/// Posts one update; the reply body, or what went wrong as getWebhookInfo says it.
async fn post(
    http: &reqwest::Client,
    destinations: &fetch::Destinations,
    row: &WebhookRow,
    body: String,
) -> Result<Vec<u8>, String> {
    // Every address the URL has now, with its port (the gateway's own addresses are refused
    // by port): an operator's --webhook-networks holds at every delivery, not only at
    // setWebhook.
    let url =
        url::Url::parse(&row.url).map_err(|_| "bad webhook: the URL is malformed".to_owned())?;
    destinations
        .check_url(&url)
        .await
        .map_err(|why| format!("bad webhook: {why}"))?;
    let mut req = http
        .post(&row.url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(secret) = &row.secret_token {
        req = req.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => {
            Ok(resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
        }
        Ok(resp) => Err(format!(
            "Wrong response from the webhook: {}",
            resp.status()
        )),
        Err(e) if e.is_timeout() => Err("Timeout expired".to_owned()),
        Err(e) if e.is_connect() => Err("Connection refused".to_owned()),
        Err(e) => Err(format!("Request failed: {e}")),
    }
}

async fn deliver_bot(
    deps: Deps,
    producer: String,
    bot: BotId,
    wake: Arc<Notify>,
    stop: CancellationToken,
    shared: reqwest::Client,
) {
    let mut backoff = Duration::from_secs(1);
    // A client of its own only for a bot with its own certificate.
    let mut own: Option<(String, reqwest::Client)> = None;
    loop {
        let row = match deps.store.webhook(bot).await {
            // A polling bot reads its updates itself (getUpdates, from the store).
            Ok(Some(row)) if row.polling() => return,
            Ok(Some(row)) => row,
            // Removed: pending updates wait for the next setWebhook (or were dropped).
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, %bot, "could not read the webhook");
                if pause(&stop, backoff).await {
                    return;
                }
                continue;
            }
        };
        // Another process delivers for this bot while it holds the lease.
        if !crate::leased(&deps, &producer, bot).await {
            if pause(&stop, crate::LEASE / 2).await {
                return;
            }
            continue;
        }
        let pending = match deps.store.pending_updates(bot, PER_READ).await {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(%error, %bot, "could not read pending updates");
                Vec::new()
            }
        };
        if pending.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let http = match &row.certificate {
            None => shared.clone(),
            Some(pem) => {
                if own.as_ref().is_none_or(|(p, _)| p != pem) {
                    own = Some((pem.clone(), client_with(Some(pem), &deps.destinations)));
                }
                own.as_ref().expect("set above").1.clone()
            }
        };
        let mut error_shown = row.last_error_date.is_some();
        let mut failed = None;
        for (update_id, body) in pending {
            let sent = tokio::select! {
                _ = stop.cancelled() => return,
                r = post(&http, &deps.destinations, &row, body) => r,
            };
            match sent {
                Ok(reply) => {
                    if let Err(error) = deps.store.delivered(bot, update_id).await {
                        tracing::warn!(%error, %bot, "could not mark an update delivered");
                        break;
                    }
                    metrics::UPDATES.with_label_values(&["delivered"]).inc();
                    if error_shown {
                        let _ = deps.store.set_webhook_error(bot, None).await;
                        error_shown = false;
                    }
                    backoff = Duration::from_secs(1);
                    reply_call(&deps, &producer, &row, &reply).await;
                }
                Err(failure) => {
                    failed = Some((update_id, failure));
                    break;
                }
            }
        }
        let Some((update_id, failure)) = failed else {
            continue;
        };
        metrics::UPDATES.with_label_values(&["failed"]).inc();
        tracing::info!(%bot, update_id, error = %failure, retry_in_s = backoff.as_secs(), "webhook delivery failed");
        let now = schemas::now_ms() / 1000;
        if let Err(error) = deps
            .store
            .set_webhook_error(bot, Some((now, failure)))
            .await
        {
            tracing::warn!(%error, %bot, "could not keep the webhook error");
        }
        // Waits out the backoff (new updates do not cut it short); a webhook set again with
        // another URL or certificate is tried at once.
        let until = tokio::time::Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if pause(&stop, left.min(Duration::from_secs(1))).await {
                return;
            }
            match deps.store.webhook(bot).await {
                Ok(Some(now)) if now.url == row.url && now.certificate == row.certificate => {}
                _ => break,
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The method call a webhook's reply body makes (`{"method": "sendMessage", ...}`): its name
/// and the other parameters; `None` for any other body.
pub fn reply_method(reply: &[u8]) -> Option<(String, serde_json::Map<String, Value>)> {
    let Ok(Value::Object(mut params)) = serde_json::from_slice::<Value>(reply) else {
        return None;
    };
    let Some(Value::String(method)) = params.remove("method") else {
        return None;
    };
    Some((method, params))
}

/// A webhook reply whose body is a method call (`{"method": "sendMessage", ...}`) is executed,
/// as Telegram does: published to `calls` like any call (recorded, processed), with nobody
/// waiting for its answer.
async fn reply_call(deps: &Deps, producer: &str, row: &WebhookRow, reply: &[u8]) {
    let Some((method, params)) = reply_method(reply) else {
        return;
    };
    let token = SealedToken(row.token_sealed.clone());
    let fingerprint = match deps.sealer.open(row.bot_id, &token) {
        Ok(t) => deps.sealer.fingerprint(t.expose()),
        Err(_) => return,
    };
    let call = Call {
        token: Some(token),
        token_fingerprint: fingerprint,
        test_env: row.test_env,
        method,
        http_method: "POST".into(),
        query: String::new(),
        body: CallBody::Json {
            value: Value::Object(params),
        },
        deadline_ms: schemas::now_ms() + 60_000,
        rejected: None,
        staged: None,
    };
    let env = Envelope::new(schemas::CallId::new(), row.bot_id, producer, None, call);
    if let Err(error) = bus::publish_envelope(deps.bus.as_ref(), bus::topics::CALLS, &env).await {
        tracing::warn!(%error, "could not publish a webhook reply's call");
    }
}
