//! The store: the audit log, call outcomes, and the blob folder.
//!
//! Processors write one [`CallRow`] per call when its outcome is known (the audit log), and the
//! outcome itself under its call id ([`Store::put_result`]) before committing the call's
//! offset, so a redelivered call is answered from the store instead of running twice. File
//! bytes never enter the store's tables: they live in [`blobs`], content-addressed.
//!
//! # Layout
//! - [`Store`] and its rows (this file).
//! - [`sqlite`]: the embedded implementation (one file under the data dir).
//! - [`scylla`]: the ScyllaDB implementation (CQL in `migrations/cql/`).
//! - [`blobs`]: the blob store trait and its local-folder implementation.
//! - [`object_blobs`]: blobs in S3 or any S3-compatible object store (`object_store`).
//! - [`testsuite`]: the behaviour every implementation must show; each runs it.

pub mod blobs;
pub mod object_blobs;
mod record_log;
pub mod scylla;
pub mod sqlite;
pub mod testsuite;

use async_trait::async_trait;
use schemas::{BlobRef, BotId, CallId, Encoding, Response, Stages};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store backend: {0}")]
    Backend(String),
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether retrying may help (a busy database) or not (malformed data).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(_) | StoreError::Task(_) | StoreError::Backend(_)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Upstream (or the gateway) answered with a success.
    Ok,
    /// The answer was an error (the bot's, upstream's or the gateway's).
    Error,
    /// Ingest refused the request before it went anywhere (bad token, malformed body).
    Rejected,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "error" => Ok(Outcome::Error),
            "rejected" => Ok(Outcome::Rejected),
            other => Err(StoreError::Malformed(format!("outcome {other}"))),
        }
    }
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRow {
    pub call_id: CallId,
    pub bot_id: BotId,
    pub received_ms: i64,
    pub token_fingerprint: String,
    pub method: String,
    pub http_method: String,
    pub test_env: bool,
    /// The parameters with secrets redacted.
    pub params: Map<String, Value>,
    pub blobs: Vec<BlobRef>,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub error_code: Option<i64>,
    pub description: Option<String>,
    pub latency_ms: Option<u64>,
    pub stages: Stages,
    /// How the bot encoded the call (what a replay sends again).
    pub encoding: Encoding,
    /// The request as sent, sealed for the bot (`schemas::Call::seal_request`): token,
    /// parameters and file parts by blob reference. `None` for rows that are no bot request
    /// (file downloads) and rows written before it was kept.
    pub request: Option<String>,
    /// Lowercase hex sha256 of the answer's body as the client got it.
    pub answer_sha256: Option<String>,
    /// The answer's body while its result is kept (`--retain-results`); filled by reads,
    /// ignored by writes (it is the stored result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Which audit rows to list, in the record's order (call ids are UUIDv7 made on arrival, so
/// this is arrival order): a time window, optionally one bot, method, status or error code,
/// after a given call (paging, following), at most `limit`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallQuery {
    pub bot_id: Option<BotId>,
    /// `[from_ms, to_ms)`, by arrival.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Compared without regard to case, as the Bot API reads method names.
    pub method: Option<String>,
    pub http_status: Option<u16>,
    pub error_code: Option<i64>,
    /// Only calls after this one in the record's order.
    pub after: Option<CallId>,
    pub limit: usize,
    /// Rows without their parameters, blobs, sealed request and answer (left empty): what
    /// counting needs, at a fraction of the reading.
    pub light: bool,
}

impl Default for CallQuery {
    /// Every call, the first thousand.
    fn default() -> Self {
        Self {
            bot_id: None,
            from_ms: 0,
            to_ms: i64::MAX,
            method: None,
            http_status: None,
            error_code: None,
            after: None,
            limit: 1000,
            light: false,
        }
    }
}

impl CallQuery {
    /// A bot's calls in `[from_ms, to_ms)`, at most `limit`.
    pub fn bot(bot_id: BotId, from_ms: i64, to_ms: i64, limit: usize) -> Self {
        Self {
            bot_id: Some(bot_id),
            from_ms,
            to_ms,
            limit,
            ..Self::default()
        }
    }

    /// Whether a row passes the filters other than window, bot and cursor (for stores that
    /// cannot say them in their query language).
    pub fn admits(&self, row: &CallRow) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(&row.method))
            && self.http_status.is_none_or(|s| row.http_status == Some(s))
            && self.error_code.is_none_or(|c| row.error_code == Some(c))
    }
}

/// The audit record: a row per call, listed by bot and time, forgotten after retention.
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Writes (or overwrites) the audit row of a call.
    async fn record_call(&self, row: &CallRow) -> Result<(), StoreError>;

    /// Hands the audit row of a call to the store to write soon, without waiting for the
    /// write: for callers to whom waiting buys nothing (on the in-process bus nothing could
    /// redo the call if the process died before the write, so nothing waits on it). Returns
    /// once the row is queued (which waits when the queue is full: backpressure); a write that
    /// fails later is logged by the store.
    async fn queue_call(&self, row: CallRow) -> Result<(), StoreError> {
        self.record_call(&row).await
    }

    /// Returns once every row queued before it ([`CallStore::queue_call`],
    /// [`OutcomeStore::queue_outcome`]) is written. A process calls it last as it stops: the
    /// rows of its last calls may still be queued then, and exiting would lose them.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Audit rows of a bot in `[from_ms, to_ms)`, oldest first.
    async fn calls(&self, query: &CallQuery) -> Result<Vec<CallRow>, StoreError>;

    /// Forgets the audit rows of calls that arrived before `before_ms` (retention); returns
    /// how many where the store can tell.
    async fn purge_calls(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// How many audit rows arrived before `before_ms` (what [`CallStore::purge_calls`] would
    /// forget; `telepipe gc --dry-run`).
    async fn count_calls_before(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Outcomes and attempts: what answers a call delivered again, what audits show and replays
/// compare with. An outcome is written with its audit row ([`OutcomeStore::record_outcome`]).
#[async_trait]
pub trait OutcomeStore: CallStore {
    /// Stores a call's outcome until `expires_ms`.
    async fn put_result(
        &self,
        call_id: CallId,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// The whole outcome of a call at once: its result and its audit row. Implementations
    /// write both together where they can (one transaction, one round trip).
    async fn record_outcome(
        &self,
        row: &CallRow,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.put_result(row.call_id, response, expires_ms).await?;
        self.record_call(row).await
    }

    /// [`OutcomeStore::record_outcome`] without waiting for the write (see [`CallStore::queue_call`]):
    /// the embedded mode keeps answers for the audit record this way.
    async fn queue_outcome(
        &self,
        row: CallRow,
        response: Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.record_outcome(&row, &response, expires_ms).await
    }

    /// A call's stored outcome, if it has one that has not expired.
    async fn get_result(&self, call_id: CallId) -> Result<Option<Response>, StoreError>;

    /// Forgets the outcomes of calls made before `before_ms` (by the time in their call id;
    /// `--retain-results`); returns how many.
    async fn purge_results(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Forgets the attempts of calls made before `before_ms`: they are needed only while a
    /// call may be delivered again (a day at least, whatever results are kept).
    async fn purge_attempts(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Records that a call is being handed to upstream; true the first time, false when an
    /// attempt was already recorded (by a processor that may have died since).
    async fn mark_attempt(&self, call_id: CallId, expires_ms: i64) -> Result<bool, StoreError>;

    /// Whether an attempt of the call is recorded, read only: a stage that records its attempt
    /// late (at the gate) asks this first, so a copy of a call that already reached upstream
    /// is refused before its files are fetched, probed and uploaded again.
    async fn attempted(&self, call_id: CallId) -> Result<bool, StoreError>;

    /// Where a call stands before a processor acts on it: answered already, in flight in
    /// another (maybe dead) processor, or new — in which case the attempt is now recorded.
    async fn begin(&self, call_id: CallId, expires_ms: i64) -> Result<Begin, StoreError> {
        if let Some(r) = self.get_result(call_id).await? {
            return Ok(Begin::Done(r));
        }
        if self.mark_attempt(call_id, expires_ms).await? {
            return Ok(Begin::Fresh);
        }
        // The other attempt may have finished in between.
        Ok(match self.get_result(call_id).await? {
            Some(r) => Begin::Done(r),
            None => Begin::InFlight,
        })
    }
}

/// What the gateway learnt about bots: their usernames.
#[async_trait]
pub trait BotStore: Send + Sync + 'static {
    /// Remembers a bot's username (from a getMe answer); a username moves with its bot.
    async fn put_bot_username(&self, bot_id: BotId, username: &str) -> Result<(), StoreError>;

    /// The bot that last had `username` (any case), if one was seen.
    async fn bot_by_username(&self, username: &str) -> Result<Option<BotId>, StoreError>;

    /// Keeps what `username` (without the `@`; any case) resolved to for this bot: a user's or
    /// bot's id, until `expires_ms`.
    async fn put_peer(
        &self,
        bot_id: BotId,
        username: &str,
        peer_id: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// What `username` resolved to for this bot, while the entry lives.
    async fn peer(&self, bot_id: BotId, username: &str) -> Result<Option<i64>, StoreError>;

    /// Keeps a bot's flood control settings (JSON, as `processors::flood` writes them).
    async fn put_flood_settings(&self, bot_id: BotId, settings: &str) -> Result<(), StoreError>;

    /// Every bot's flood control settings (few rows: the bots that called setFloodControl).
    async fn flood_settings(&self) -> Result<Vec<(BotId, String)>, StoreError>;
}

/// Every part of the store: what the composition root opens and hands out. Consumers name the
/// part they use (`Arc<dyn CallStore>`, `&dyn FileStore`); an `Arc<dyn Store>` coerces to each.
pub trait Store: OutcomeStore + BotStore + FileStore + WebhookStore + SessionStore {}

impl<T: OutcomeStore + BotStore + FileStore + WebhookStore + SessionStore + ?Sized> Store for T {}

/// A file a bot fetched, kept in the blob store and served under `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRow {
    pub bot_id: BotId,
    /// The Bot API file_unique_id; for a file cached from an official `/file/` path,
    /// `path:<official path>`.
    pub file_unique_id: String,
    /// The file_id the bot last asked for.
    pub file_id: String,
    /// `<bot_username>/<name>` (served at `/storage/`), or `official:<bot_id>/<official path>`.
    pub path: String,
    pub blob: BlobRef,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    pub stored_ms: i64,
}

/// MTProto sessions, sealed for their bot (what `telegram::grammers` signs in with again).
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Keeps a bot's sealed MTProto session.
    async fn put_session(&self, bot_id: BotId, sealed: &str) -> Result<(), StoreError>;

    /// A bot's sealed MTProto session.
    async fn session(&self, bot_id: BotId) -> Result<Option<String>, StoreError>;
}

/// The part of [`Store`] that keeps files: the files bots fetched and the uploads' dedupe cache.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Records (or replaces) a bot's file.
    async fn put_file(&self, row: &FileRow) -> Result<(), StoreError>;

    /// A bot's file by its file_unique_id.
    async fn file_by_unique_id(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
    ) -> Result<Option<FileRow>, StoreError>;

    /// A file by the path it is served under.
    async fn file_by_path(&self, path: &str) -> Result<Option<FileRow>, StoreError>;

    /// Remembers the file_id Telegram gave an upload (the dedupe cache).
    async fn put_upload(&self, key: &UploadKey, file_id: &str) -> Result<(), StoreError>;

    /// The file_id of the same upload made before, if any.
    async fn cached_upload(&self, key: &UploadKey) -> Result<Option<String>, StoreError>;

    /// Forgets a cached upload (its file_id stopped working).
    async fn forget_upload(&self, key: &UploadKey) -> Result<(), StoreError>;

    /// Records that a stored file was served now (getFile found it, a download sent it): files
    /// are evicted least recently served first.
    async fn touch_file(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Per bot: how many stored files, and their bytes.
    async fn file_usage(&self) -> Result<Vec<(BotId, u64, u64)>, StoreError>;

    /// Stored files (of one bot, or every bot's), least recently served first.
    async fn files_least_served(
        &self,
        bot_id: Option<BotId>,
        limit: usize,
    ) -> Result<Vec<StoredFile>, StoreError>;

    /// Forgets a stored file (eviction): the next getFile fetches it again.
    async fn forget_file(&self, bot_id: BotId, file_unique_id: &str) -> Result<(), StoreError>;

    /// Whether any stored file (of any bot) still has its bytes in this blob.
    async fn blob_in_use(&self, blob_key: &str) -> Result<bool, StoreError>;
}

/// Marks a stored file as served now (eviction takes the least recently served first), off
/// the request path: a failure only makes the file look older.
pub fn touch_soon<S: FileStore + ?Sized>(store: &std::sync::Arc<S>, row: &FileRow) {
    let (store, bot, unique) = (store.clone(), row.bot_id, row.file_unique_id.clone());
    tokio::spawn(async move {
        if let Err(error) = store.touch_file(bot, &unique, schemas::now_ms()).await {
            tracing::debug!(%error, "could not mark a stored file as served");
        }
    });
}

/// A stored file and when it was last served.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFile {
    pub row: FileRow,
    pub served_ms: i64,
}

/// A webhook the gateway keeps for a bot (setWebhook), and where polling Telegram for it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookRow {
    pub bot_id: BotId,
    pub url: String,
    pub secret_token: Option<String>,
    pub max_connections: i64,
    /// JSON array of update kinds, as the bot gave it.
    pub allowed_updates: Option<String>,
    /// PEM of the bot's self-signed certificate, trusted for its URL only.
    pub certificate: Option<String>,
    /// The bot's token sealed under the cluster key: the gateway polls Telegram as the bot.
    pub token_sealed: String,
    pub test_env: bool,
    /// Telegram pushes this bot's updates to the gateway's `/hook/` (a public URL is set);
    /// otherwise the gateway polls for them.
    pub telegram_hook: bool,
    /// The next update_id to ask Telegram for.
    pub poll_offset: i64,
    pub last_error_date: Option<i64>,
    pub last_error_message: Option<String>,
}

impl WebhookRow {
    /// A row without a URL: the bot reads its updates with getUpdates, which the gateway
    /// answers from the updates it keeps (it polls Telegram for them as for a webhook).
    pub fn polling(&self) -> bool {
        self.url.is_empty()
    }
}

/// The part of [`Store`] that keeps webhooks and the updates waiting for them.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Sets a bot's webhook; the poll offset and last error of an earlier one are kept.
    async fn put_webhook(&self, row: &WebhookRow) -> Result<(), StoreError>;

    async fn webhook(&self, bot_id: BotId) -> Result<Option<WebhookRow>, StoreError>;

    /// Every webhook (the pollers' and deliverers' work list).
    async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError>;

    /// Removes a bot's webhook; with `drop_pending`, its undelivered updates too.
    async fn delete_webhook(&self, bot_id: BotId, drop_pending: bool) -> Result<(), StoreError>;

    async fn set_poll_offset(&self, bot_id: BotId, offset: i64) -> Result<(), StoreError>;

    /// The last delivery error (`None`: clear it).
    async fn set_webhook_error(
        &self,
        bot_id: BotId,
        error: Option<(i64, String)>,
    ) -> Result<(), StoreError>;

    /// Keeps an update to deliver; `false` when it was kept before (a replayed record).
    async fn put_update(
        &self,
        bot_id: BotId,
        update_id: i64,
        update: &str,
    ) -> Result<bool, StoreError>;

    /// Keeps many updates, in the order given, together where the store can (one transaction
    /// for SQLite): a reader never sees a later update of a bot without the earlier ones.
    async fn put_updates(&self, updates: &[(BotId, i64, String)]) -> Result<(), StoreError> {
        for (bot_id, update_id, body) in updates {
            self.put_update(*bot_id, *update_id, body).await?;
        }
        Ok(())
    }

    /// The oldest undelivered updates of a bot, in update_id order.
    async fn pending_updates(
        &self,
        bot_id: BotId,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;

    async fn pending_count(&self, bot_id: BotId) -> Result<u64, StoreError>;

    async fn delivered(&self, bot_id: BotId, update_id: i64) -> Result<(), StoreError>;

    /// Forgets updates delivered (or dropped) before `before_ms`: they were kept so that a
    /// replayed bus record is not delivered again, which after the bus's retention cannot
    /// happen. Drops updates nobody took within [`PENDING_UPDATES_KEPT_MS`] too, as Telegram
    /// does. ScyllaDB expires both by TTL instead.
    async fn purge_updates(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// A polling bot's kept updates from `from` on (confirmed ones too, while kept), in
    /// update_id order: what a named reader reads.
    async fn updates_from(
        &self,
        bot_id: BotId,
        from: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;

    /// Confirms (marks delivered) every pending update of a bot below `below`: getUpdates'
    /// `offset`. A confirmed update stays readable by named readers until it is purged.
    async fn confirm_updates(&self, bot_id: BotId, below: i64) -> Result<(), StoreError>;

    /// Keeps where a reader of a polling bot stands; a reader unused for as long as delivered
    /// updates are remembered is forgotten (`purge_updates`; ScyllaDB: TTL).
    async fn put_reader(&self, bot_id: BotId, reader: &ReaderRow) -> Result<(), StoreError>;

    /// A polling bot's readers, by name (`""`, the bot itself, first).
    async fn readers(&self, bot_id: BotId) -> Result<Vec<ReaderRow>, StoreError>;

    /// Takes or renews the lease on a bot's webhook work (polling, delivery) for `owner` until
    /// `until_ms`: granted when nobody holds it, `owner` holds it, or the holder's lease ran
    /// out before `now_ms`. So one process at a time polls and delivers for a bot, and another
    /// takes over when it dies.
    async fn lease_webhook(
        &self,
        bot_id: BotId,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError>;
}

/// A reader of a polling bot's updates (getUpdates, with the gateway's `reader` parameter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderRow {
    /// `""`: the bot itself, whose offset confirms updates as Telegram's does.
    pub reader: String,
    /// The first update_id the reader has not confirmed.
    pub next_update_id: i64,
    /// When it last asked.
    pub read_ms: i64,
}

/// How long an update nobody took is kept: Telegram's 24 hours.
pub const PENDING_UPDATES_KEPT_MS: i64 = 24 * 3600 * 1000;

/// How long a delivered update is remembered (against a replayed bus record): a week, beyond
/// any bus retention the gateway is run with.
pub const DELIVERED_UPDATES_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// What makes two uploads the same: bot, content, kind (`document`, `photo`, ...), name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadKey {
    pub bot_id: BotId,
    pub sha256: String,
    pub kind: schemas::MediaKind,
    pub file_name: String,
}

/// A stored response (JSON of `schemas::Response`), as every implementation keeps it.
pub(crate) fn decode_response(json: &str) -> Result<Response, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// The body of a stored response as text (what an audit row shows as the answer); `None` for
/// a body kept as a blob or not UTF-8.
pub(crate) fn answer_text(json: &str) -> Result<Option<String>, StoreError> {
    let response = decode_response(json)?;
    Ok(response
        .body
        .inline_bytes()
        .and_then(|b| String::from_utf8(b.to_vec()).ok()))
}

/// See [`Store::begin`].
#[derive(Clone, Debug, PartialEq)]
pub enum Begin {
    /// Never attempted: the attempt is recorded now.
    Fresh,
    /// Attempted before, no outcome recorded: its processor died mid-call, or is still on it.
    InFlight,
    /// The recorded outcome.
    Done(Response),
}
