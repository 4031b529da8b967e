//! The ScyllaDB store (`scylla` 1.x): the same tables and behaviour as the SQLite store, for
//! deployments that run the roles on many machines.
//!
//! `ScyllaStore::connect("scylla://host:9042[,host:9042]/keyspace?rf=N")` creates the keyspace
//! when missing, applies `migrations/cql/` and prepares every statement once. Results and
//! attempts expire by TTL, so `purge_results` has nothing to do. Attempts use a lightweight
//! transaction (`IF NOT EXISTS`), so two processors cannot both think a call is new.
//!
//! Tested by the shared store suite on the sandbox's CQL stand-in (`sandbox/cql`), and on a real
//! node where `TELEPIPE_TEST_SCYLLA` names one (see the README).

use crate::{
    BotStore, CallQuery, CallRow, CallStore, FileRow, FileStore, Outcome, OutcomeStore, ReaderRow,
    SessionStore, StoreError, UploadKey, WebhookRow, WebhookStore,
};
use async_trait::async_trait;
use schemas::{BotId, CallId, Response, Stages};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use uuid::Uuid;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/cql/0001_init.cql"),
    include_str!("../migrations/cql/0002_peers.cql"),
    include_str!("../migrations/cql/0003_readers.cql"),
    include_str!("../migrations/cql/0004_flood.cql"),
];

const DAY_MS: i64 = 86_400_000;

pub struct ScyllaStore {
    session: Session,
    insert_call: PreparedStatement,
    select_calls: PreparedStatement,
    select_calls_light: PreparedStatement,
    insert_result: PreparedStatement,
    select_result: PreparedStatement,
    insert_attempt: PreparedStatement,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// `scylla://h1:9042,h2:9042/keyspace?rf=3` → (nodes, keyspace, replication factor).
pub fn parse_url(url: &str) -> Result<(Vec<String>, String, u32), StoreError> {
    let rest = url
        .strip_prefix("scylla://")
        .ok_or_else(|| err(format!("not a scylla:// URL: {url}")))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (nodes, keyspace) = rest.split_once('/').unwrap_or((rest, "telepipe"));
    let keyspace = if keyspace.is_empty() {
        "telepipe"
    } else {
        keyspace
    };
    if !keyspace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(err(format!("bad keyspace name {keyspace}")));
    }
    let nodes: Vec<String> = nodes
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if nodes.is_empty() {
        return Err(err("no ScyllaDB node in the URL"));
    }
    let rf = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("rf="))
        .map(|v| v.parse::<u32>().map_err(|_| err("rf must be a number")))
        .transpose()?
        .unwrap_or(1);
    Ok((nodes, keyspace.to_owned(), rf))
}

impl ScyllaStore {
    /// The file a path's index entry names: (bot, file_unique_id).
    async fn path_owner(&self, path: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .session
            .query_unpaged(
                "SELECT bot_id, file_unique_id FROM files_by_path WHERE path = ?",
                (path,),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?
            .maybe_first_row::<(Option<i64>, Option<String>)>()
            .map_err(err)?
            .and_then(|(bot, unique)| Some((bot?, unique?))))
    }

    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (nodes, keyspace, rf) = parse_url(url)?;
        // Only the store's keyspace is read into the driver's metadata (what token-aware
        // routing needs): a cluster shared by many keyspaces is not read whole on each DDL.
        let session = SessionBuilder::new()
            .known_nodes(&nodes)
            .keyspaces_to_fetch([keyspace.clone()])
            .build()
            .await
            .map_err(err)?;
        session
            .query_unpaged(
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                     {{'class': 'NetworkTopologyStrategy', 'replication_factor': {rf}}}"
                ),
                &[],
            )
            .await
            .map_err(err)?;
        session.use_keyspace(&keyspace, false).await.map_err(err)?;
        for file in MIGRATIONS {
            for statement in statements(file) {
                session.query_unpaged(statement, &[]).await.map_err(err)?;
            }
        }
        let prepare = |q: &'static str| session.prepare(q);
        Ok(Self {
            insert_call: prepare(
                "INSERT INTO calls (bot_id, day, received_ms, call_id, token_fp, method, \
                 http_method, test_env, params, blobs, outcome, http_status, error_code, \
                 description, latency_ms, queue_ms, upstream_ms, encoding, request, \
                 answer_sha256) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .await
            .map_err(err)?,
            select_calls: prepare(
                "SELECT bot_id, received_ms, call_id, token_fp, method, http_method, test_env, \
                 params, blobs, outcome, http_status, error_code, description, latency_ms, \
                 queue_ms, upstream_ms, encoding, request, answer_sha256 FROM calls \
                 WHERE bot_id = ? AND day = ? AND (received_ms, call_id) > (?, ?) \
                 AND (received_ms) < (?) LIMIT ?",
            )
            .await
            .map_err(err)?,
            select_calls_light: prepare(
                "SELECT bot_id, received_ms, call_id, token_fp, method, http_method, test_env, \
                 outcome, http_status, error_code, description, latency_ms, queue_ms, \
                 upstream_ms, encoding, answer_sha256 FROM calls \
                 WHERE bot_id = ? AND day = ? AND (received_ms, call_id) > (?, ?) \
                 AND (received_ms) < (?) LIMIT ?",
            )
            .await
            .map_err(err)?,
            insert_result: prepare("INSERT INTO results (call_id, response) VALUES (?, ?) USING TTL ?")
                .await
                .map_err(err)?,
            select_result: prepare("SELECT response FROM results WHERE call_id = ?")
                .await
                .map_err(err)?,
            insert_attempt: prepare(
                "INSERT INTO attempts (call_id, started_ms) VALUES (?, ?) IF NOT EXISTS USING TTL ?",
            )
            .await
            .map_err(err)?,
            session,
        })
    }
}

impl ScyllaStore {
    /// Every stored file, with when it was last served.
    async fn every_file(&self) -> Result<Vec<crate::StoredFile>, StoreError> {
        let r = self
            .session
            .query_unpaged(format!("SELECT {FILE_COLUMNS}, served_ms FROM files"), &[])
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        type Served = (
            i64,
            String,
            String,
            String,
            String,
            i64,
            String,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
        );
        for row in r.rows::<Served>().map_err(err)? {
            let c = row.map_err(err)?;
            let served = c.10;
            let row = file_from((c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9));
            out.push(crate::StoredFile {
                served_ms: served.unwrap_or(row.stored_ms),
                row,
            });
        }
        Ok(out)
    }

    /// Every (bot, day) partition of `calls`.
    async fn partitions(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let r = self
            .session
            .query_unpaged("SELECT DISTINCT bot_id, day FROM calls", &[])
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        for row in r.rows::<(i64, i64)>().map_err(err)? {
            out.push(row.map_err(err)?);
        }
        Ok(out)
    }

    /// How many of one partition's calls arrived before `before_ms`.
    async fn count_before(&self, bot: i64, day: i64, before_ms: i64) -> Result<u64, StoreError> {
        let r = self
            .session
            .query_unpaged(
                "SELECT COUNT(*) FROM calls WHERE bot_id = ? AND day = ? AND received_ms < ?",
                (bot, day, before_ms),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let (c,): (i64,) = r.single_row().map_err(err)?;
        Ok(c.max(0) as u64)
    }

    /// One partition's calls in the query's window after its cursor that pass its filters, at
    /// most `q.limit`, paging past rows the filters drop.
    async fn partition_calls(
        &self,
        q: &CallQuery,
        bot: i64,
        day: i64,
    ) -> Result<Vec<CallRow>, StoreError> {
        let mut cursor = match q.after {
            Some(a) if a.time_ms() >= q.from_ms => (a.time_ms(), a.0),
            _ => (q.from_ms - 1, Uuid::max()),
        };
        let page = q.limit.clamp(1, 5000) as i32;
        let mut out = Vec::new();
        loop {
            // Light rows leave the parameters, blobs and sealed request on the server.
            let statement = if q.light {
                &self.select_calls_light
            } else {
                &self.select_calls
            };
            let result = self
                .session
                .execute_unpaged(statement, (bot, day, cursor.0, cursor.1, q.to_ms, page))
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            let rows: Vec<CallColumns> = if q.light {
                result
                    .rows::<LightColumns>()
                    .map_err(err)?
                    .map(|r| r.map(CallColumns::from))
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            } else {
                result
                    .rows::<CallColumns>()
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            };
            let mut n = 0;
            for r in rows {
                let row = r.into_row()?;
                n += 1;
                cursor = (row.received_ms, row.call_id.0);
                if q.admits(&row) {
                    out.push(row);
                }
            }
            if n < page as usize || out.len() >= q.limit {
                return Ok(out);
            }
        }
    }
}

/// The statements of a CQL file: `;`-separated, `--` comments dropped.
fn statements(file: &str) -> Vec<String> {
    let clean: String = file
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    clean
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An update delivered: the whole row again, body gone, under a TTL, so it expires a week
/// after delivery.
const DELIVERED: &str = "INSERT INTO updates (bot_id, update_id, body, delivered) \
                         VALUES (?, ?, null, true) USING TTL ?";
const DELIVERED_TTL_S: i32 = (crate::DELIVERED_UPDATES_KEPT_MS / 1000) as i32;

/// An update taken by a bot's getUpdates: kept whole (named readers may still read it), for
/// as long as a delivered one is remembered.
const CONFIRMED: &str = "INSERT INTO updates (bot_id, update_id, body, delivered) \
                         VALUES (?, ?, ?, true) USING TTL ?";

/// A pending update lives 24 hours unless taken, as at Telegram.
const PENDING_TTL_S: i32 = (crate::PENDING_UPDATES_KEPT_MS / 1000) as i32;

/// Updates marked delivered in one batch when a webhook drops its backlog.
const DROP_BATCH: usize = 200;

/// The shortest life of an attempt marker, in seconds.
const ATTEMPT_FLOOR_S: i32 = 24 * 3600;

/// Seconds until `expires_ms`, as a CQL TTL (`None` when already expired).
fn ttl(expires_ms: i64) -> Option<i32> {
    let secs = (expires_ms - schemas::now_ms()).div_euclid(1000);
    (secs > 0).then(|| secs.min(i32::MAX as i64) as i32)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// An audit row's bind values.
fn call_values(row: &CallRow) -> CallValues<'_> {
    CallValues {
        bot_id: row.bot_id.0,
        day: row.received_ms.div_euclid(DAY_MS),
        received_ms: row.received_ms,
        call_id: row.call_id.0,
        token_fp: &row.token_fingerprint,
        method: &row.method,
        http_method: &row.http_method,
        test_env: row.test_env,
        params: json(&row.params),
        blobs: json(&row.blobs),
        outcome: row.outcome.as_str(),
        http_status: row.http_status.map(i32::from),
        error_code: row.error_code,
        description: row.description.as_deref(),
        latency_ms: row.latency_ms.map(|v| v as i64),
        queue_ms: row.stages.queue_ms as i64,
        upstream_ms: row.stages.upstream_ms as i64,
        encoding: row.encoding.as_str(),
        request: row.request.as_deref(),
        answer_sha256: row.answer_sha256.as_deref(),
    }
}

/// An audit row's bind values, by column name.
#[derive(scylla::SerializeRow)]
struct CallValues<'a> {
    bot_id: i64,
    day: i64,
    received_ms: i64,
    call_id: Uuid,
    token_fp: &'a str,
    method: &'a str,
    http_method: &'a str,
    test_env: bool,
    params: String,
    blobs: String,
    outcome: &'a str,
    http_status: Option<i32>,
    error_code: Option<i64>,
    description: Option<&'a str>,
    latency_ms: Option<i64>,
    queue_ms: i64,
    upstream_ms: i64,
    encoding: &'a str,
    request: Option<&'a str>,
    answer_sha256: Option<&'a str>,
}

#[derive(scylla::DeserializeRow)]
struct CallColumns {
    bot_id: i64,
    received_ms: i64,
    call_id: Uuid,
    token_fp: Option<String>,
    method: Option<String>,
    http_method: Option<String>,
    test_env: Option<bool>,
    params: Option<String>,
    blobs: Option<String>,
    outcome: Option<String>,
    http_status: Option<i32>,
    error_code: Option<i64>,
    description: Option<String>,
    latency_ms: Option<i64>,
    queue_ms: Option<i64>,
    upstream_ms: Option<i64>,
    encoding: Option<String>,
    request: Option<String>,
    answer_sha256: Option<String>,
}

/// [`CallColumns`] less what a light query leaves out.
#[derive(scylla::DeserializeRow)]
struct LightColumns {
    bot_id: i64,
    received_ms: i64,
    call_id: Uuid,
    token_fp: Option<String>,
    method: Option<String>,
    http_method: Option<String>,
    test_env: Option<bool>,
    outcome: Option<String>,
    http_status: Option<i32>,
    error_code: Option<i64>,
    description: Option<String>,
    latency_ms: Option<i64>,
    queue_ms: Option<i64>,
    upstream_ms: Option<i64>,
    encoding: Option<String>,
    answer_sha256: Option<String>,
}

impl From<LightColumns> for CallColumns {
    fn from(l: LightColumns) -> Self {
        CallColumns {
            bot_id: l.bot_id,
            received_ms: l.received_ms,
            call_id: l.call_id,
            token_fp: l.token_fp,
            method: l.method,
            http_method: l.http_method,
            test_env: l.test_env,
            params: None,
            blobs: None,
            outcome: l.outcome,
            http_status: l.http_status,
            error_code: l.error_code,
            description: l.description,
            latency_ms: l.latency_ms,
            queue_ms: l.queue_ms,
            upstream_ms: l.upstream_ms,
            encoding: l.encoding,
            request: None,
            answer_sha256: l.answer_sha256,
        }
    }
}

impl CallColumns {
    fn into_row(self) -> Result<CallRow, StoreError> {
        let malformed = |e: serde_json::Error| StoreError::Malformed(e.to_string());
        Ok(CallRow {
            call_id: CallId(self.call_id),
            bot_id: BotId(self.bot_id),
            received_ms: self.received_ms,
            token_fingerprint: self.token_fp.unwrap_or_default(),
            method: self.method.unwrap_or_default(),
            http_method: self.http_method.unwrap_or_default(),
            test_env: self.test_env.unwrap_or(false),
            params: serde_json::from_str(self.params.as_deref().unwrap_or("{}"))
                .map_err(malformed)?,
            blobs: serde_json::from_str(self.blobs.as_deref().unwrap_or("[]"))
                .map_err(malformed)?,
            outcome: Outcome::parse(self.outcome.as_deref().unwrap_or(""))?,
            http_status: self.http_status.map(|v| v as u16),
            error_code: self.error_code,
            description: self.description,
            latency_ms: self.latency_ms.map(|v| v as u64),
            stages: Stages {
                queue_ms: self.queue_ms.unwrap_or(0) as u64,
                upstream_ms: self.upstream_ms.unwrap_or(0) as u64,
            },
            encoding: self
                .encoding
                .as_deref()
                .and_then(schemas::Encoding::parse)
                .unwrap_or(schemas::Encoding::Query),
            request: self.request,
            answer_sha256: self.answer_sha256,
            answer: None,
        })
    }
}

type FileColumns = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
);

const FILE_COLUMNS: &str = "bot_id, file_unique_id, file_id, path, sha256, size, blob_key, \
                            file_name, mime_type, stored_ms";

fn file_from(c: FileColumns) -> FileRow {
    FileRow {
        bot_id: BotId(c.0),
        file_unique_id: c.1,
        file_id: c.2,
        path: c.3,
        blob: schemas::BlobRef {
            sha256: c.4,
            size: c.5.max(0) as u64,
            key: c.6,
        },
        file_name: c.7,
        mime_type: c.8,
        stored_ms: c.9,
    }
}

// Files and sessions are few and cold next to calls: their statements are not prepared.
#[async_trait]
impl SessionStore for ScyllaStore {
    async fn put_session(&self, bot_id: BotId, sealed: &str) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "INSERT INTO mtproto_sessions (bot_id, sealed, updated_ms) VALUES (?, ?, ?)",
                (bot_id.0, sealed, schemas::now_ms()),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn session(&self, bot_id: BotId) -> Result<Option<String>, StoreError> {
        self.one_text(
            "SELECT sealed FROM mtproto_sessions WHERE bot_id = ?",
            (bot_id.0,),
        )
        .await
    }
}

#[async_trait]
impl FileStore for ScyllaStore {
    async fn put_file(&self, f: &FileRow) -> Result<(), StoreError> {
        // As SQLite's one transaction: the row, its path's index entry and, when the path
        // named another file, that file's row go together in one logged batch.
        let previous = self
            .path_owner(&f.path)
            .await?
            .filter(|(bot, unique)| (*bot, unique.as_str()) != (f.bot_id.0, &f.file_unique_id));
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(
            format!(
                "INSERT INTO files ({FILE_COLUMNS}, served_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            .as_str(),
        );
        batch.append_statement(
            "INSERT INTO files_by_path (path, bot_id, file_unique_id) VALUES (?, ?, ?)",
        );
        let file = (
            f.bot_id.0,
            &f.file_unique_id,
            &f.file_id,
            &f.path,
            &f.blob.sha256,
            f.blob.size as i64,
            &f.blob.key,
            f.file_name.as_deref(),
            f.mime_type.as_deref(),
            f.stored_ms,
            f.stored_ms,
        );
        let index = (&f.path, f.bot_id.0, &f.file_unique_id);
        let sent = match &previous {
            None => self.session.batch(&batch, (file, index)).await,
            Some((bot, unique)) => {
                batch.append_statement("DELETE FROM files WHERE bot_id = ? AND file_unique_id = ?");
                self.session
                    .batch(&batch, (file, index, (*bot, unique)))
                    .await
            }
        };
        sent.map_err(err)?;
        Ok(())
    }

    async fn file_by_unique_id(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        let rows = self
            .session
            .query_unpaged(
                format!("SELECT {FILE_COLUMNS} FROM files WHERE bot_id = ? AND file_unique_id = ?"),
                (bot_id.0, file_unique_id),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(rows
            .maybe_first_row::<FileColumns>()
            .map_err(err)?
            .map(file_from))
    }

    async fn file_by_path(&self, path: &str) -> Result<Option<FileRow>, StoreError> {
        let rows = self
            .session
            .query_unpaged(
                "SELECT bot_id, file_unique_id FROM files_by_path WHERE path = ?",
                (path,),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let Some((bot_id, unique)) = rows.maybe_first_row::<(i64, String)>().map_err(err)? else {
            return Ok(None);
        };
        // The path index may point at a row since replaced under another path.
        Ok(self
            .file_by_unique_id(BotId(bot_id), &unique)
            .await?
            .filter(|f| f.path == path))
    }

    async fn put_upload(&self, key: &UploadKey, file_id: &str) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "INSERT INTO uploads (bot_id, sha256, kind, file_name, file_id, stored_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key.bot_id.0,
                    &key.sha256,
                    key.kind.param(),
                    &key.file_name,
                    file_id,
                    schemas::now_ms(),
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn cached_upload(&self, key: &UploadKey) -> Result<Option<String>, StoreError> {
        self.one_text(
            "SELECT file_id FROM uploads WHERE bot_id = ? AND sha256 = ? AND kind = ? \
             AND file_name = ?",
            (key.bot_id.0, &key.sha256, key.kind.param(), &key.file_name),
        )
        .await
    }

    async fn touch_file(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // IF EXISTS: a touch never brings back a file evicted meanwhile.
        self.session
            .query_unpaged(
                "UPDATE files SET served_ms = ? WHERE bot_id = ? AND file_unique_id = ? IF EXISTS",
                (now_ms, bot_id.0, file_unique_id),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn file_usage(&self) -> Result<Vec<(BotId, u64, u64)>, StoreError> {
        let mut by_bot = std::collections::BTreeMap::<i64, (u64, u64)>::new();
        for f in self.every_file().await? {
            let e = by_bot.entry(f.row.bot_id.0).or_default();
            e.0 += 1;
            e.1 += f.row.blob.size;
        }
        Ok(by_bot
            .into_iter()
            .map(|(b, (n, bytes))| (BotId(b), n, bytes))
            .collect())
    }

    async fn files_least_served(
        &self,
        bot_id: Option<BotId>,
        limit: usize,
    ) -> Result<Vec<crate::StoredFile>, StoreError> {
        // Files are few next to calls: read them all and sort (a bot's are one partition).
        let mut files: Vec<_> = self
            .every_file()
            .await?
            .into_iter()
            .filter(|f| bot_id.is_none_or(|b| f.row.bot_id == b))
            .collect();
        files.sort_by(|a, b| {
            (a.served_ms, a.row.bot_id, &a.row.file_unique_id).cmp(&(
                b.served_ms,
                b.row.bot_id,
                &b.row.file_unique_id,
            ))
        });
        files.truncate(limit);
        Ok(files)
    }

    async fn forget_file(&self, bot_id: BotId, file_unique_id: &str) -> Result<(), StoreError> {
        // The row and its path's index entry together (SQLite's row carries its path): the
        // entry only while it still names this file.
        let path = self
            .session
            .query_unpaged(
                "SELECT path FROM files WHERE bot_id = ? AND file_unique_id = ?",
                (bot_id.0, file_unique_id),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?
            .maybe_first_row::<(Option<String>,)>()
            .map_err(err)?
            .and_then(|(p,)| p);
        let indexed = match &path {
            Some(path) => self
                .path_owner(path)
                .await?
                .is_some_and(|(b, u)| b == bot_id.0 && u == file_unique_id),
            None => false,
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement("DELETE FROM files WHERE bot_id = ? AND file_unique_id = ?");
        let row = (bot_id.0, file_unique_id);
        let sent = match path.filter(|_| indexed) {
            Some(path) => {
                batch.append_statement("DELETE FROM files_by_path WHERE path = ?");
                self.session.batch(&batch, (row, (path,))).await
            }
            None => self.session.batch(&batch, (row,)).await,
        };
        sent.map_err(err)?;
        Ok(())
    }

    async fn blob_in_use(&self, blob_key: &str) -> Result<bool, StoreError> {
        Ok(self
            .every_file()
            .await?
            .iter()
            .any(|f| f.row.blob.key == blob_key))
    }

    async fn forget_upload(&self, key: &UploadKey) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "DELETE FROM uploads WHERE bot_id = ? AND sha256 = ? AND kind = ? AND file_name = ?",
                (key.bot_id.0, &key.sha256, key.kind.param(), &key.file_name),
            )
            .await
            .map_err(err)?;
        Ok(())
    }
}

const WEBHOOK_COLUMNS: &str = "bot_id, url, secret_token, max_connections, allowed_updates, \
    certificate, token_sealed, test_env, poll_offset, last_error_date, last_error_message, \
    telegram_hook";

type WebhookColumns = (
    i64,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    String,
    bool,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<bool>,
);

fn webhook_from(c: WebhookColumns) -> WebhookRow {
    WebhookRow {
        bot_id: BotId(c.0),
        url: c.1,
        secret_token: c.2,
        max_connections: c.3,
        allowed_updates: c.4,
        certificate: c.5,
        token_sealed: c.6,
        test_env: c.7,
        poll_offset: c.8.unwrap_or(0),
        last_error_date: c.9,
        last_error_message: c.10,
        telegram_hook: c.11.unwrap_or(false),
    }
}

impl ScyllaStore {
    /// The one text column of the first row a query answers, if any.
    async fn one_text(
        &self,
        cql: &str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<String>, StoreError> {
        let rows = self
            .session
            .query_unpaged(cql, values)
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(rows
            .maybe_first_row::<(String,)>()
            .map_err(err)?
            .map(|(s,)| s))
    }

    /// Runs a lightweight transaction; whether it applied.
    async fn applied(
        &self,
        cql: String,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, StoreError> {
        let result = self
            .session
            .query_unpaged(cql, values)
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(result
            .maybe_first_row::<Row>()
            .map_err(err)?
            .and_then(|r| r.columns.into_iter().next().flatten())
            .is_some_and(|v| matches!(v, CqlValue::Boolean(true))))
    }

    async fn webhook_rows(
        &self,
        cql: String,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        let result = self
            .session
            .query_unpaged(cql, values)
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        for r in result.rows::<WebhookColumns>().map_err(err)? {
            out.push(webhook_from(r.map_err(err)?));
        }
        Ok(out)
    }
}

#[async_trait]
impl WebhookStore for ScyllaStore {
    async fn put_webhook(&self, w: &WebhookRow) -> Result<(), StoreError> {
        // An UPDATE is an upsert that leaves the poll offset and last error as they were.
        self.session
            .query_unpaged(
                "UPDATE webhooks SET url = ?, secret_token = ?, max_connections = ?,
                   allowed_updates = ?, certificate = ?, token_sealed = ?, test_env = ?,
                   telegram_hook = ?
                 WHERE bot_id = ?",
                (
                    &w.url,
                    w.secret_token.as_deref(),
                    w.max_connections,
                    w.allowed_updates.as_deref(),
                    w.certificate.as_deref(),
                    &w.token_sealed,
                    w.test_env,
                    w.telegram_hook,
                    w.bot_id.0,
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn webhook(&self, bot_id: BotId) -> Result<Option<WebhookRow>, StoreError> {
        let rows = self
            .webhook_rows(
                format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE bot_id = ?"),
                (bot_id.0,),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        self.webhook_rows(format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks"), ())
            .await
    }

    async fn delete_webhook(&self, bot_id: BotId, drop_pending: bool) -> Result<(), StoreError> {
        // As SQLite's one transaction, as far as a batch may go: the webhook and the first
        // updates it drops in one logged batch; a long backlog's rest in batches after it (a
        // batch has a size limit), each update marked as delivered() marks it.
        let pending = if drop_pending {
            self.pending_updates(bot_id, usize::MAX).await?
        } else {
            Vec::new()
        };
        let mut chunks = pending.chunks(DROP_BATCH);
        let mut batch = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = vec![vec![CqlValue::BigInt(bot_id.0)]];
        batch.append_statement("DELETE FROM webhooks WHERE bot_id = ?");
        let mut next = chunks.next();
        loop {
            for (update_id, _) in next.unwrap_or_default() {
                batch.append_statement(DELIVERED);
                values.push(vec![
                    CqlValue::BigInt(bot_id.0),
                    CqlValue::BigInt(*update_id),
                    CqlValue::Int(DELIVERED_TTL_S),
                ]);
            }
            self.session.batch(&batch, values).await.map_err(err)?;
            next = chunks.next();
            if next.is_none() {
                return Ok(());
            }
            batch = Batch::new(BatchType::Unlogged);
            values = Vec::new();
        }
    }

    async fn set_poll_offset(&self, bot_id: BotId, offset: i64) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "UPDATE webhooks SET poll_offset = ? WHERE bot_id = ? IF EXISTS",
                (offset, bot_id.0),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn set_webhook_error(
        &self,
        bot_id: BotId,
        error: Option<(i64, String)>,
    ) -> Result<(), StoreError> {
        let (date, message) = error.unzip();
        self.session
            .query_unpaged(
                "UPDATE webhooks SET last_error_date = ?, last_error_message = ?
                 WHERE bot_id = ? IF EXISTS",
                (date, message, bot_id.0),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn put_update(
        &self,
        bot_id: BotId,
        update_id: i64,
        update: &str,
    ) -> Result<bool, StoreError> {
        self.applied(
            "INSERT INTO updates (bot_id, update_id, body, delivered) VALUES (?, ?, ?, false) \
             IF NOT EXISTS USING TTL ?"
                .to_owned(),
            (bot_id.0, update_id, update, PENDING_TTL_S),
        )
        .await
    }

    async fn pending_updates(
        &self,
        bot_id: BotId,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        // One partition per bot, clustered by update_id: the filter stays inside it.
        let result = self
            .session
            .query_unpaged(
                "SELECT update_id, body FROM updates WHERE bot_id = ? AND delivered = false
                 LIMIT ? ALLOW FILTERING",
                (bot_id.0, limit.min(i32::MAX as usize) as i32),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        for r in result.rows::<(i64, String)>().map_err(err)? {
            out.push(r.map_err(err)?);
        }
        Ok(out)
    }

    async fn lease_webhook(
        &self,
        bot_id: BotId,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        // CQL conditions have no OR: the three ways to be granted, tried in turn (a missing
        // row has a null url, so none applies to it). Between two of them another task of this
        // process (the poller and the deliverer share an owner) may take the free lease: the
        // owner's own condition is asked again last.
        let set = "UPDATE webhooks SET lease_owner = ?, lease_until = ? WHERE bot_id = ?";
        let mine = || {
            self.applied(
                format!("{set} IF lease_owner = ?"),
                (owner, until_ms, bot_id.0, owner),
            )
        };
        Ok(mine().await?
            || self
                .applied(
                    format!("{set} IF url != null AND lease_owner = null"),
                    (owner, until_ms, bot_id.0),
                )
                .await?
            || self
                .applied(
                    format!("{set} IF lease_until < ?"),
                    (owner, until_ms, bot_id.0, now_ms),
                )
                .await?
            || mine().await?)
    }

    async fn pending_count(&self, bot_id: BotId) -> Result<u64, StoreError> {
        Ok(self.pending_updates(bot_id, usize::MAX).await?.len() as u64)
    }

    async fn delivered(&self, bot_id: BotId, update_id: i64) -> Result<(), StoreError> {
        self.session
            .query_unpaged(DELIVERED, (bot_id.0, update_id, DELIVERED_TTL_S))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn purge_updates(&self, _before_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn updates_from(
        &self,
        bot_id: BotId,
        from: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        // A webhook's delivered updates keep no body (SQLite's do): skipped, reading on until
        // `limit` updates with one are found or the partition ends.
        let page = limit.clamp(1, 1000) as i32;
        let mut out = Vec::new();
        let mut from = from;
        while out.len() < limit {
            let result = self
                .session
                .query_unpaged(
                    "SELECT update_id, body FROM updates WHERE bot_id = ? AND update_id >= ? \
                     LIMIT ?",
                    (bot_id.0, from, page),
                )
                .await
                .map_err(err)?
                .into_rows_result()
                .map_err(err)?;
            let mut rows = 0;
            for r in result.rows::<(i64, Option<String>)>().map_err(err)? {
                let (id, body) = r.map_err(err)?;
                rows += 1;
                from = id.saturating_add(1);
                if let Some(body) = body {
                    if out.len() < limit {
                        out.push((id, body));
                    }
                }
            }
            if rows < page {
                break;
            }
        }
        Ok(out)
    }

    async fn confirm_updates(&self, bot_id: BotId, below: i64) -> Result<(), StoreError> {
        let result = self
            .session
            .query_unpaged(
                "SELECT update_id, body FROM updates WHERE bot_id = ? AND update_id < ?
                 AND delivered = false ALLOW FILTERING",
                (bot_id.0, below),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut taken = Vec::new();
        for r in result.rows::<(i64, String)>().map_err(err)? {
            taken.push(r.map_err(err)?);
        }
        // Each row rewritten whole: one row's write is atomic, and an update confirmed twice
        // (a batch cut short, then the next getUpdates) is the same row again.
        for chunk in taken.chunks(DROP_BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            let mut values = Vec::with_capacity(chunk.len());
            for (update_id, body) in chunk {
                batch.append_statement(CONFIRMED);
                values.push((bot_id.0, *update_id, body.as_str(), DELIVERED_TTL_S));
            }
            self.session.batch(&batch, values).await.map_err(err)?;
        }
        Ok(())
    }

    async fn put_reader(&self, bot_id: BotId, reader: &ReaderRow) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "INSERT INTO readers (bot_id, reader, next_update_id, read_ms) VALUES (?, ?, ?, ?) \
                 USING TTL ?",
                (
                    bot_id.0,
                    &reader.reader,
                    reader.next_update_id,
                    reader.read_ms,
                    DELIVERED_TTL_S,
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn readers(&self, bot_id: BotId) -> Result<Vec<ReaderRow>, StoreError> {
        let result = self
            .session
            .query_unpaged(
                "SELECT reader, next_update_id, read_ms FROM readers WHERE bot_id = ?",
                (bot_id.0,),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        for r in result.rows::<(String, i64, i64)>().map_err(err)? {
            let (reader, next_update_id, read_ms) = r.map_err(err)?;
            out.push(ReaderRow {
                reader,
                next_update_id,
                read_ms,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl CallStore for ScyllaStore {
    async fn record_call(&self, row: &CallRow) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(&self.insert_call, call_values(row))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn calls(&self, q: &CallQuery) -> Result<Vec<CallRow>, StoreError> {
        // Partitions are (bot, day): one bot's window is a walk over its days; every bot's is
        // a walk over the days of the partitions there are (`SELECT DISTINCT` of the
        // partition key), merged by the record's order within each day.
        let bots: Option<Vec<i64>> = q.bot_id.map(|b| vec![b.0]);
        // The days there are rows for (a bot's, or anyone's): a window from 1970 or over
        // years walks only those.
        let partitions: Vec<(i64, i64)> = self
            .partitions()
            .await?
            .into_iter()
            .filter(|p| q.bot_id.is_none_or(|b| p.0 == b.0))
            .collect();
        let first_day = q
            .after
            .map(|a| a.time_ms())
            .unwrap_or(q.from_ms)
            .max(q.from_ms)
            .div_euclid(DAY_MS);
        let last_day = (q.to_ms.min(i64::MAX - 1) - 1).div_euclid(DAY_MS);
        let mut days: Vec<i64> = partitions
            .iter()
            .map(|p| p.1)
            .filter(|d| (first_day..=last_day).contains(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        let mut out = Vec::new();
        for day in days {
            let day_bots: Vec<i64> = match &bots {
                Some(b) => b.clone(),
                None => partitions
                    .iter()
                    .filter(|p| p.1 == day)
                    .map(|p| p.0)
                    .collect(),
            };
            let mut rows = Vec::new();
            for bot in day_bots {
                rows.extend(self.partition_calls(q, bot, day).await?);
            }
            rows.sort_by_key(|r: &CallRow| (r.received_ms, r.call_id));
            out.extend(rows);
            if out.len() >= q.limit {
                break;
            }
        }
        out.truncate(q.limit);
        if q.light {
            return Ok(out);
        }
        for row in &mut out {
            row.answer = match self.get_result(row.call_id).await? {
                Some(r) => r
                    .body
                    .inline_bytes()
                    .and_then(|b| String::from_utf8(b.to_vec()).ok()),
                None => None,
            };
        }
        Ok(out)
    }

    async fn purge_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        // Whole partitions (a bot's day) before the cut's day; in that day, a range deletion
        // of the rows before the cut. Each is counted first, for the operator's report.
        let cut = before_ms.div_euclid(DAY_MS);
        let mut n = 0;
        for (bot, day) in self.partitions().await? {
            if day > cut {
                continue;
            }
            n += self.count_before(bot, day, before_ms).await?;
            if day < cut {
                self.session
                    .query_unpaged("DELETE FROM calls WHERE bot_id = ? AND day = ?", (bot, day))
                    .await
                    .map_err(err)?;
            } else {
                self.session
                    .query_unpaged(
                        "DELETE FROM calls WHERE bot_id = ? AND day = ? AND received_ms < ?",
                        (bot, day, before_ms),
                    )
                    .await
                    .map_err(err)?;
            }
        }
        Ok(n)
    }

    async fn count_calls_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let cut = before_ms.div_euclid(DAY_MS);
        let mut n = 0u64;
        for (bot, day) in self.partitions().await? {
            if day <= cut {
                n += self.count_before(bot, day, before_ms).await?;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl OutcomeStore for ScyllaStore {
    async fn put_result(
        &self,
        call_id: CallId,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(ttl) = ttl(expires_ms) else {
            return Ok(());
        };
        self.session
            .execute_unpaged(&self.insert_result, (call_id.0, json(response), ttl))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn record_outcome(
        &self,
        row: &CallRow,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        // One logged batch, as SQLite's one transaction: a crash leaves both or neither (a
        // result without its audit row, or the reverse, would answer a redelivery wrongly).
        let Some(ttl) = ttl(expires_ms) else {
            return self.record_call(row).await;
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(self.insert_result.clone());
        batch.append_statement(self.insert_call.clone());
        self.session
            .batch(
                &batch,
                ((row.call_id.0, json(response), ttl), call_values(row)),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn get_result(&self, call_id: CallId) -> Result<Option<Response>, StoreError> {
        let result = self
            .session
            .execute_unpaged(&self.select_result, (call_id.0,))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let Some((body,)) = result.maybe_first_row::<(Option<String>,)>().map_err(err)? else {
            return Ok(None);
        };
        body.as_deref().map(crate::decode_response).transpose()
    }

    async fn purge_attempts(&self, _before_ms: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn purge_results(&self, _before_ms: i64) -> Result<u64, StoreError> {
        // Rows expire by TTL.
        Ok(0)
    }

    async fn attempted(&self, call_id: CallId) -> Result<bool, StoreError> {
        let r = self
            .session
            .query_unpaged(
                "SELECT started_ms FROM attempts WHERE call_id = ?",
                (call_id.0,),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(r.rows_num() > 0)
    }

    async fn mark_attempt(&self, call_id: CallId, expires_ms: i64) -> Result<bool, StoreError> {
        // An attempt is kept at least as long as `purge_attempts` promises (a day): an expiry
        // already past must not make the marker vanish while a redelivery may still come.
        let ttl = ttl(expires_ms).unwrap_or(0).max(ATTEMPT_FLOOR_S);
        let result = self
            .session
            .execute_unpaged(&self.insert_attempt, (call_id.0, schemas::now_ms(), ttl))
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let row: Row = result.first_row().map_err(err)?;
        match row.columns.first() {
            Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
            other => Err(StoreError::Malformed(format!(
                "a conditional insert answered {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl BotStore for ScyllaStore {
    async fn put_bot_username(&self, bot_id: BotId, username: &str) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "INSERT INTO bot_usernames (username, bot_id, updated_ms) VALUES (?, ?, ?)",
                (username.to_lowercase(), bot_id.0, schemas::now_ms()),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn put_peer(
        &self,
        bot_id: BotId,
        username: &str,
        peer_id: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(ttl) = ttl(expires_ms) else {
            return Ok(());
        };
        self.session
            .query_unpaged(
                "INSERT INTO peers (bot_id, username, peer_id) VALUES (?, ?, ?) USING TTL ?",
                (bot_id.0, username.to_lowercase(), peer_id, ttl),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn peer(&self, bot_id: BotId, username: &str) -> Result<Option<i64>, StoreError> {
        let r = self
            .session
            .query_unpaged(
                "SELECT peer_id FROM peers WHERE bot_id = ? AND username = ?",
                (bot_id.0, username.to_lowercase()),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(r.maybe_first_row::<(Option<i64>,)>()
            .map_err(err)?
            .and_then(|(p,)| p))
    }

    async fn put_flood_settings(&self, bot_id: BotId, settings: &str) -> Result<(), StoreError> {
        self.session
            .query_unpaged(
                "INSERT INTO flood_settings (bot_id, settings) VALUES (?, ?)",
                (bot_id.0, settings),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn flood_settings(&self) -> Result<Vec<(BotId, String)>, StoreError> {
        let result = self
            .session
            .query_unpaged("SELECT bot_id, settings FROM flood_settings", ())
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        let mut out = Vec::new();
        // A row without settings (CQL cells may be null) is not one to keep.
        for r in result.rows::<(i64, Option<String>)>().map_err(err)? {
            if let (bot, Some(settings)) = r.map_err(err)? {
                out.push((BotId(bot), settings));
            }
        }
        Ok(out)
    }

    async fn bot_by_username(&self, username: &str) -> Result<Option<BotId>, StoreError> {
        let r = self
            .session
            .query_unpaged(
                "SELECT bot_id FROM bot_usernames WHERE username = ?",
                (username.to_lowercase(),),
            )
            .await
            .map_err(err)?
            .into_rows_result()
            .map_err(err)?;
        Ok(r.maybe_first_row::<(i64,)>()
            .map_err(err)?
            .map(|(b,)| BotId(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("scylla://a:9042,b:9042/tp?rf=3").unwrap(),
            (vec!["a:9042".into(), "b:9042".into()], "tp".into(), 3)
        );
        assert_eq!(
            parse_url("scylla://a:9042").unwrap(),
            (vec!["a:9042".into()], "telepipe".into(), 1)
        );
        assert!(parse_url("scylla://a/bad-name").is_err());
        assert!(parse_url("scylla:///ks").is_err());
        assert!(parse_url("sqlite:x").is_err());
    }

    #[test]
    fn splits_cql_files() {
        let s = statements(MIGRATIONS[0]);
        assert_eq!(s.len(), 10);
        assert!(s
            .iter()
            .all(|q| q.starts_with("CREATE TABLE IF NOT EXISTS")));
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl(schemas::now_ms() - 5), None);
        assert!(ttl(schemas::now_ms() + 10_000).unwrap() >= 9);
    }
}
