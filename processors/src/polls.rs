//! getUpdates for polling bots (ENHANCED.md, "Polling bots"): the gateway polls Telegram for a
//! bot that uses getUpdates (the `webhooks` crate's poller, for a row without a URL), every
//! update goes through `updates.raw` and the filter into the store, and the bot's getUpdates is
//! answered from there with the official semantics: `offset` confirms, a negative one keeps
//! only the last updates, `limit`, `timeout`, `allowed_updates` (what the gateway asks
//! Telegram for from then on), a newer poll ends a waiting one with Telegram's 409, and an
//! update nobody takes is kept 24 hours. A bot that was down gets everything that came
//! meanwhile, once, in order.
//!
//! A **reader** (`reader=<name>`, the gateway's parameter) has an offset of its own over the
//! same updates, so a second service can follow a bot without taking its updates; the default
//! reader (`""`) is the bot itself and confirms as Telegram does. getUpdatesInfo lists them.
//!
//! A poll with nothing to read waits on its bot's [`Polls`] entry: the deliverer announces each
//! batch it keeps on `updates.kept`, which every router reads in a group of its own
//! ([`listen`]) and turns into a wake-up here. A waiting poll holds no processing slot (the
//! stage gives it back, see `lib.rs`), only this entry and its task.

use crate::failures;
use crate::{Deps, ProcessorError};
use schemas::{ApiError, BotId, Call, Envelope, Response};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{ReaderRow, StoreError, WebhookRow};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cmd::GetUpdates;

/// How long the first getUpdates of a bot the gateway was not polling for waits at least: the
/// poller's first round fetches what Telegram kept meanwhile.
const FIRST_ROUND: Duration = Duration::from_secs(3);

/// Named readers a bot may have.
const MAX_READERS: usize = 16;

/// How often a reader's row is written when nothing but its time changed (the idle check
/// needs no finer).
const READ_MARK_EVERY_MS: i64 = 30_000;

/// The waiting polls of this process, by bot.
#[derive(Clone, Default)]
pub struct Polls(Arc<Mutex<HashMap<BotId, Arc<BotPolls>>>>);

#[derive(Default)]
struct BotPolls {
    /// Notified (all waiters) when updates were kept, or a newer poll came.
    wake: Notify,
    /// The newest poll of each reader, by a process-wide number.
    newest: Mutex<HashMap<String, u64>>,
}

/// A poll's place in its bot's entry, until dropped.
struct Entry {
    polls: Polls,
    bot_id: BotId,
    bot: Arc<BotPolls>,
    reader: String,
    number: u64,
}

static NUMBER: AtomicU64 = AtomicU64::new(1);

/// A reader's newest poll number once setWebhook ended its polls.
const BY_WEBHOOK: u64 = 0;

/// Why a waiting poll must end.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    ByPoll,
    ByWebhook,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Polls {
    /// Wakes every poll of `bot` waiting here.
    pub fn wake(&self, bot: BotId) {
        if let Some(b) = lock(&self.0).get(&bot) {
            b.wake.notify_waiters();
        }
    }

    /// Ends every poll of `bot` waiting here with Telegram's 409 for a setWebhook.
    pub fn end(&self, bot: BotId) {
        if let Some(b) = lock(&self.0).get(&bot) {
            for n in lock(&b.newest).values_mut() {
                *n = BY_WEBHOOK;
            }
            b.wake.notify_waiters();
        }
    }

    /// Bots with a poll here (a gauge's worth).
    pub fn bots(&self) -> usize {
        lock(&self.0).len()
    }

    /// A new poll of `reader`: any older one of that reader is ended (it sees
    /// [`Entry::superseded`]).
    fn enter(&self, bot_id: BotId, reader: &str) -> Entry {
        let bot = lock(&self.0).entry(bot_id).or_default().clone();
        let number = NUMBER.fetch_add(1, Ordering::Relaxed);
        lock(&bot.newest).insert(reader.to_owned(), number);
        bot.wake.notify_waiters();
        Entry {
            polls: self.clone(),
            bot_id,
            bot,
            reader: reader.to_owned(),
            number,
        }
    }
}

impl Entry {
    fn ended(&self) -> Option<Ended> {
        match lock(&self.bot.newest).get(&self.reader) {
            Some(&n) if n == self.number => None,
            Some(&BY_WEBHOOK) => Some(Ended::ByWebhook),
            _ => Some(Ended::ByPoll),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        {
            let mut newest = lock(&self.bot.newest);
            if matches!(newest.get(&self.reader), Some(&n) if n == self.number || n == BY_WEBHOOK) {
                newest.remove(&self.reader);
            }
        }
        // The last poll of a bot takes its entry away: the map holds only bots with polls.
        let mut bots = lock(&self.polls.0);
        if Arc::strong_count(&self.bot) == 2 && lock(&self.bot.newest).is_empty() {
            bots.remove(&self.bot_id);
        }
    }
}

/// Wakes this process's waiting polls as the deliverer keeps updates: every record of
/// `updates.kept`, in a group of this instance's own (`polls.<instance>`).
pub async fn listen(
    bus: Arc<dyn bus::Bus>,
    polls: Polls,
    instance: String,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let topics = [bus::topics::UPDATES_KEPT.to_owned()];
    bus.ensure_topics(&topics).await?;
    let consumer = bus.subscribe(&format!("polls.{instance}"), &topics).await?;
    let opts = bus::stage::Options {
        batch: 512,
        ..bus::stage::Options::sequential("poll-wakes")
    };
    bus::stage::run(consumer, opts, shutdown, |records, _slot| {
        for env in records
            .iter()
            .filter_map(bus::decode_or_skip::<schemas::UpdatesKept>)
        {
            polls.wake(env.header.bot_id);
        }
        async { Ok::<(), ProcessorError>(()) }
    })
    .await
}

fn answer(updates: &[(i64, String)]) -> Response {
    // The updates as kept (exactly as Telegram sent them), in one array.
    let mut body = Vec::with_capacity(32 + updates.iter().map(|(_, u)| u.len() + 1).sum::<usize>());
    body.extend_from_slice(br#"{"ok":true,"result":["#);
    for (i, (_, update)) in updates.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(update.as_bytes());
    }
    body.extend_from_slice(b"]}");
    Response {
        body: schemas::BodyBytes::inline(&body),
        ..Response::gateway_json(200, &json!(null))
    }
}

fn failed(error: StoreError) -> Response {
    failures::store("the updates could not be read")(error).into()
}

fn conflict(description: &str) -> Response {
    Response::from_error(&ApiError::new(409, description))
}

/// getUpdates: see the module's documentation.
pub async fn get_updates(deps: &Deps, env: &Envelope<Call>, get: GetUpdates) -> Response {
    let bot = env.header.bot_id;
    // First, so that of two overlapping polls the later one stays, however long each takes
    // to get here.
    let entry = deps.polls.enter(bot, &get.reader);
    let row = match deps.store.webhook(bot).await {
        Ok(row) => row,
        Err(e) => return failed(e),
    };
    if row.as_ref().is_some_and(|w| !w.polling()) {
        return conflict("Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first");
    }
    let first = row.is_none();
    // Polled for from now on (a new row), with the token and update kinds of the latest call.
    let wanted = get
        .allowed_updates
        .clone()
        .or_else(|| row.as_ref().and_then(|w| w.allowed_updates.clone()));
    let kept_token =
        match crate::auth::owner(deps, env, row.as_ref().map(|w| w.token_sealed.as_str())).await {
            Ok(kept) => kept,
            Err(refused) => return refused,
        };
    let changed = row.as_ref().is_none_or(|w| {
        w.allowed_updates != wanted || w.test_env != env.payload.test_env || !kept_token
    });
    let readers = match deps.store.readers(bot).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if !get.reader.is_empty()
        && readers.len() >= MAX_READERS
        && !readers.iter().any(|r| r.reader == get.reader)
    {
        return Response::from_error(&ApiError::bad_request(format!(
            "a bot may have at most {MAX_READERS} readers"
        )));
    }
    if changed {
        let polling = WebhookRow {
            bot_id: bot,
            url: String::new(),
            secret_token: None,
            max_connections: 1,
            allowed_updates: wanted,
            certificate: None,
            token_sealed: env.payload.token.clone().map(|t| t.0).unwrap_or_default(),
            test_env: env.payload.test_env,
            telegram_hook: false,
            poll_offset: 0,
            last_error_date: None,
            last_error_message: None,
        };
        if let Err(e) = deps.store.put_webhook(&polling).await {
            return failed(e);
        }
        if first {
            tracing::info!(bot_id = %bot, "polling Telegram for a bot that uses getUpdates");
        }
    }
    let mut reader = match Reader::open(deps, bot, &get, row.as_ref(), readers).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let wait = if first {
        get.timeout.max(FIRST_ROUND)
    } else {
        get.timeout
    };
    let deadline = tokio::time::Instant::now() + wait;
    let stop = deps.polls_stop.clone().unwrap_or_default();
    loop {
        // Registered before the store is read: a wake-up between the two is not lost.
        let woken = entry.bot.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match entry.ended() {
            Some(Ended::ByPoll) => return conflict("Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"),
            Some(Ended::ByWebhook) => return conflict("Conflict: terminated by setWebhook request"),
            None => {}
        }
        let updates = match reader.read(deps, bot, get.limit).await {
            Ok(u) => u,
            Err(e) => return failed(e),
        };
        if !updates.is_empty() || tokio::time::Instant::now() >= deadline {
            return answer(&updates);
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(deadline) => {}
            // Nothing confirmed by this poll is lost: the bot asks again.
            _ = stop.cancelled() => return answer(&[]),
        }
    }
}

/// Where one reader stands, and how it reads.
struct Reader {
    row: ReaderRow,
    /// The row as stored (None: not yet).
    stored: Option<ReaderRow>,
}

impl Reader {
    /// The reader's place after this call's `offset`: updates below it confirmed (the bot's
    /// own reader), or skipped (a named one).
    async fn open(
        deps: &Deps,
        bot: BotId,
        get: &GetUpdates,
        row: Option<&WebhookRow>,
        readers: Vec<ReaderRow>,
    ) -> Result<Reader, StoreError> {
        let stored = readers.into_iter().find(|r| r.reader == get.reader);
        let own = get.reader.is_empty();
        // A new named reader starts at the bot's first unconfirmed update, or at the next
        // one to come (the own reader's place is shown as that too). A positive offset says
        // the place itself, so the common call (the own reader confirming) reads no more.
        let mut next = match (get.offset, &stored, own) {
            (Some(offset), _, _) if offset > 0 => offset,
            (_, Some(s), false) => s.next_update_id,
            _ => deps
                .store
                .pending_updates(bot, 1)
                .await?
                .first()
                .map(|u| u.0)
                .unwrap_or_else(|| row.map_or(0, |w| w.poll_offset)),
        };
        if let Some(offset) = get.offset.filter(|o| *o < 0) {
            // The last `-offset` updates stay; everything before is forgotten.
            let keep = offset.unsigned_abs() as usize;
            let ids: Vec<i64> = if own {
                deps.store.pending_updates(bot, usize::MAX).await?
            } else {
                deps.store.updates_from(bot, next, usize::MAX).await?
            }
            .into_iter()
            .map(|u| u.0)
            .collect();
            if ids.len() > keep {
                next = ids[ids.len() - keep];
            }
        }
        if own && get.offset.is_some() {
            deps.store.confirm_updates(bot, next).await?;
        }
        Ok(Reader {
            row: ReaderRow {
                reader: get.reader.clone(),
                next_update_id: next,
                read_ms: schemas::now_ms(),
            },
            stored,
        })
    }

    async fn read(
        &mut self,
        deps: &Deps,
        bot: BotId,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let updates = if self.row.reader.is_empty() {
            deps.store.pending_updates(bot, limit).await?
        } else {
            deps.store
                .updates_from(bot, self.row.next_update_id, limit)
                .await?
        };
        // Kept for the idle check and getUpdatesInfo; not confirmed by reading (only by the
        // next call's offset), as at Telegram.
        self.row.read_ms = schemas::now_ms();
        let due = self.stored.as_ref().is_none_or(|s| {
            s.next_update_id != self.row.next_update_id
                || self.row.read_ms - s.read_ms >= READ_MARK_EVERY_MS
        });
        if due {
            deps.store.put_reader(bot, &self.row).await?;
            self.stored = Some(self.row.clone());
        }
        Ok(updates)
    }
}

/// getUpdatesInfo: whether the gateway polls for the bot, and each reader's place and pending
/// count (getWebhookInfo's numbers, per reader).
pub async fn updates_info(deps: &Deps, env: &Envelope<Call>) -> Response {
    let bot = env.header.bot_id;
    let row = match deps.store.webhook(bot).await {
        Ok(row) => row,
        Err(e) => return failed(e),
    };
    if let Err(refused) =
        crate::auth::owner(deps, env, row.as_ref().map(|w| w.token_sealed.as_str())).await
    {
        return refused;
    }
    let info = async {
        let pending = deps.store.pending_count(bot).await?;
        let mut readers = Vec::new();
        for r in deps.store.readers(bot).await? {
            let waiting = if r.reader.is_empty() {
                pending
            } else {
                deps.store
                    .updates_from(bot, r.next_update_id, usize::MAX)
                    .await?
                    .len() as u64
            };
            readers.push(json!({
                "reader": r.reader,
                "next_update_id": r.next_update_id,
                "pending_update_count": waiting,
                "last_read_date": r.read_ms / 1000,
            }));
        }
        Ok::<_, StoreError>(json!({
            "polling": row.as_ref().is_some_and(WebhookRow::polling),
            "webhook": row.as_ref().is_some_and(|w| !w.polling()),
            "pending_update_count": pending,
            "readers": readers,
        }))
    };
    match info.await {
        Ok(result) => Response::gateway_json(200, &json!({"ok": true, "result": result})),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_poll_of_a_reader_ends_the_older_and_the_map_keeps_only_bots_with_polls() {
        let polls = Polls::default();
        let bot = BotId(7);
        let first = polls.enter(bot, "");
        let follower = polls.enter(bot, "analytics");
        assert_eq!(first.ended(), None);
        let second = polls.enter(bot, "");
        assert_eq!(first.ended(), Some(Ended::ByPoll), "the older poll ends");
        assert_eq!(second.ended(), None);
        assert_eq!(follower.ended(), None, "another reader's poll goes on");
        drop(first);
        assert_eq!(
            second.ended(),
            None,
            "the older one leaving changes nothing"
        );
        assert_eq!(polls.bots(), 1);
        polls.end(bot);
        assert_eq!(second.ended(), Some(Ended::ByWebhook));
        assert_eq!(follower.ended(), Some(Ended::ByWebhook));
        drop(second);
        drop(follower);
        assert_eq!(polls.bots(), 0, "no polls, no entry");
        // A wake for a bot without polls is nothing.
        polls.wake(bot);
        assert_eq!(polls.bots(), 0);
    }
}
