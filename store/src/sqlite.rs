//! The SQLite store of embedded mode: one file, WAL journal, migrations applied on open.
//!
//! Writes go to one writer thread that owns the write connection and commits whatever is
//! queued in one transaction (group commit): under load, a hundred calls' outcomes cost one
//! commit instead of a hundred. Reads use their own connections (WAL lets them run beside the
//! writer), on tokio's blocking pool.
//!
//! The WAL is bounded (see [`SqliteOptions::wal_limit`]): the writer itself checkpoints
//! between its commits, so no write runs beside the checkpoint and it always catches up (a
//! checkpoint beside a busy writer never does, and the WAL then grows without end); the file
//! is truncated back when it restarts.
//!
//! The audit rows nobody waits for (embedded mode answers the bot first) queue for the writer
//! within a budget of bytes ([`SqliteOptions::queue_bytes`]) as well as of jobs: a bot's 10 MB
//! calls would otherwise let 4,096 queued rows hold gigabytes while the disk is slow.

use crate::record_log::{self, Log, Logs};
use crate::{
    BotStore, CallQuery, CallRow, CallStore, FileRow, FileStore, Outcome, OutcomeStore, ReaderRow,
    SessionStore, StoreError, UploadKey, WebhookRow, WebhookStore,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use schemas::{BotId, CallId, Encoding, Response, Stages};
use std::cell::Cell;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_attempts.sql"),
    include_str!("../migrations/sqlite/0003_files.sql"),
    include_str!("../migrations/sqlite/0004_uploads.sql"),
    include_str!("../migrations/sqlite/0005_webhooks.sql"),
    include_str!("../migrations/sqlite/0006_lean_calls.sql"),
    include_str!("../migrations/sqlite/0007_replayable_calls.sql"),
    include_str!("../migrations/sqlite/0008_file_retention.sql"),
    include_str!("../migrations/sqlite/0009_peers.sql"),
    include_str!("../migrations/sqlite/0010_readers.sql"),
    include_str!("../migrations/sqlite/0011_flood.sql"),
    include_str!("../migrations/sqlite/0012_record_log.sql"),
];

/// Read connections; two cover a two-core machine's processors and the audit reader.
const READERS: usize = 2;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Most rows one purge transaction deletes: a purge of a busy day's results runs as many short
/// transactions, between which other writes and checkpoints go on.
const PURGE_CHUNK: u64 = 5_000;

const PAGE: u64 = 4096;

/// How the SQLite store bounds its files.
#[derive(Clone, Copy, Debug)]
pub struct SqliteOptions {
    /// The most bytes the WAL may hold. The writer checkpoints once the WAL passes half of this
    /// (at most 32 MiB), or an eighth (at most 4 MiB) while callers wait for its commits, so
    /// under load it stays near that; past the limit (readers kept a checkpoint from
    /// finishing) the writer waits for them and truncates it.
    pub wal_limit: u64,
    /// The most bytes of queued audit rows (their sealed requests, parameters and answers,
    /// as estimated by [`queued_size`]) waiting for the writer; a caller queueing more waits
    /// for room. A row larger than this waits for the queue to empty.
    pub queue_bytes: usize,
    /// The size at which a segment of the record's logs is closed and the next begun (see
    /// [`record_log`]): retention removes whole segments.
    pub segment_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            wal_limit: 64 * 1024 * 1024,
            queue_bytes: 64 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection (SQLite's WAL hook
    /// runs on the committing thread, and each store has one writer thread).
    static WAL_FRAMES: Cell<u64> = const { Cell::new(0) };
}

#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    /// The writer thread, woken from its linger by an urgent job.
    writer_thread: std::thread::Thread,
    readers: Arc<Vec<Mutex<Connection>>>,
    /// Room in bytes for queued audit rows ([`SqliteOptions::queue_bytes`]).
    room: Arc<Semaphore>,
    queue_bytes: usize,
    /// Where the record's logs are (see [`record_log`]).
    record_dir: Arc<std::path::PathBuf>,
}

enum Write {
    /// An audit row: its bulk (parameters, blobs, sealed request) to the calls log, the rest
    /// to `calls`; with the answer kept for the audit (the response's JSON and until when), to
    /// the answers log.
    Call(Box<CallRow>, Option<(String, i64)>),
    Result {
        call_id: [u8; 16],
        response: String,
        expires_ms: i64,
    },
    Attempt {
        call_id: [u8; 16],
        now_ms: i64,
    },
    /// `Store::begin` in one step: counts 2 when a result exists, else records the attempt
    /// and counts 1 (new) or 0 (attempted before).
    Begin {
        call_id: [u8; 16],
        now_ms: i64,
    },
    /// Deletes up to [`PURGE_CHUNK`] rows of `table` (results, attempts) of calls before
    /// `before`.
    Purge {
        table: &'static str,
        before: [u8; 16],
    },
    /// Deletes up to [`PURGE_CHUNK`] audit rows of calls before `before` (retention).
    PurgeCalls {
        before: [u8; 16],
    },
    /// Forgets the segments of a record log whose calls are all before `before`.
    PurgeLog {
        log: Log,
        before: [u8; 16],
    },
    /// Answers of calls before `before` written so far are forgotten, whatever their expiry.
    AnswersBefore {
        before: [u8; 16],
    },
    File(Box<FileRow>),
    Upload {
        key: UploadKey,
        file_id: Option<String>,
        now_ms: i64,
    },
    Session {
        bot_id: i64,
        sealed: String,
        now_ms: i64,
    },
    /// One statement with its values (the webhook tables' simple writes).
    Sql {
        sql: &'static str,
        values: Vec<rusqlite::types::Value>,
    },
}

/// Writes that succeed or fail together, and who waits for them.
struct Job {
    writes: Vec<Write>,
    /// Who waits for the outcome; nobody for a queued audit row (its failure is logged).
    done: Option<oneshot::Sender<Result<u64, StoreError>>>,
    /// Someone's next step waits for this write (an attempt before a call goes upstream):
    /// committed at once. Audit rows are not urgent: their call is answered already, so
    /// they may wait a little for company (see [`LINGER`]).
    urgent: bool,
    /// The room a queued row holds until the writer has answered it.
    _room: Option<OwnedSemaphorePermit>,
}

/// What a queued audit row holds in memory, roughly: its sealed request, its parameters (the
/// request's again, as JSON values) and its answer.
fn queued_size(row: &CallRow, answer: usize) -> usize {
    let request = row.request.as_ref().map_or(0, String::len);
    let description = row.description.as_ref().map_or(0, String::len);
    512 + 2 * request + description + answer
}

impl Job {
    fn answer(self, result: Result<u64, StoreError>) {
        match (self.done, result) {
            (Some(done), result) => {
                let _ = done.send(result);
            }
            (None, Err(error)) => {
                tracing::error!(%error, "a queued audit row could not be written")
            }
            (None, Ok(_)) => {}
        }
    }
}

/// How long a batch of writes nobody is held up by (audit rows) may wait for more before it
/// is committed: every commit writes each page it touched to the WAL in full (the last,
/// part-filled leaf of each table and index again at every commit), so fifty rows a commit
/// cost a fiftieth of the disk writes of one row a commit. At 13-15k calls a second, 5 ms
/// (batches of ~70) wrote 3.5 KB a call where 2 ms (~26) wrote 4.4 KB, and the writer
/// thread's CPU a call fell ~2 us; 10 ms gained little more (3.2 KB, the same CPU). A
/// crash loses what lingers, but a queued row is lost with the process anyway.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// A batch this large when it is taken (or after a wake-up) is committed without lingering.
const LINGER_ENOUGH: usize = 256;

/// The linger of a batch of queued rows only (nobody waits for any: the embedded mode's
/// record), up to [`MAX_BATCH`] of them. With the rows' bulk in the record's logs a row is
/// ~250 bytes of database and a commit's cost is mostly its fixed part (the part-filled
/// leaves and their parents, ~9 WAL frames, two `pwrite`s each): at 10-12k calls a second
/// the writer spent 10.3-11.4 us a call at 5 ms, 8.1-9.6 at 20 ms, 8.1-8.4 at 50 ms. A job
/// someone waits for (a durable bus's outcome, which holds its processor's slot until
/// written) ends the longer linger: the batch keeps [`LINGER`].
const LINGER_QUEUED: std::time::Duration = std::time::Duration::from_millis(20);

/// How long the writer applies a batch's rows before it lets the threads waiting for its core
/// go first (`sched_yield`). A batch of a few hundred rows is 3-5 ms of CPU in one run, and on
/// a box whose cores the gateway shares with its clients and upstream, the calls whose thread
/// waited behind it for a core were the answers' tail: at 8 connections on two cores (wrk,
/// nginx upstream, the gateway on lanes) wrk's p99 went from 2.83-3.07 ms to 1.06-1.46 ms
/// (`bench/README.md`). The writer loses no share of the CPU by it (it is runnable again at
/// once), nor any time when no thread waits.
const WRITER_SLICE: std::time::Duration = std::time::Duration::from_micros(150);

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::build(path, false, options)
    }

    /// A private database in a temporary file, removed when the last handle is dropped: the
    /// same WAL file mode as production, for tests. (An in-memory database would need a shared
    /// cache for the readers, whose table locks behave differently.)
    pub fn in_memory() -> Result<Self, StoreError> {
        let path =
            std::env::temp_dir().join(format!("telepipe-{:032x}.db", rand::random::<u128>()));
        Self::build(&path, true, SqliteOptions::default())
    }

    fn build(path: &Path, temporary: bool, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let open = |flags| Connection::open_with_flags(&path, flags);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = open(flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        prepare_with_retries(&conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = open(flags)?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            readers.push(Mutex::new(r));
        }
        // The writer checkpoints between its own commits (see `Checkpoints`), never inside one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Each row takes at most all of it, as one u32 acquire.
        let queue_bytes = options
            .queue_bytes
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let checkpoints = Checkpoints::new(options);
        // When the WAL restarts after a checkpoint, its file is cut back to this.
        conn.pragma_update(None, "journal_size_limit", checkpoints.soft * PAGE)?;
        conn.wal_hook(Some(|_, frames| {
            WAL_FRAMES.with(|f| f.set(frames.max(0) as u64));
            Ok(())
        }));
        // Room for what arrives while a checkpoint runs: a 32 MiB one took 60-100 ms, ~2,000
        // rows of a busy gateway.
        let (tx, rx) = mpsc::channel(4096);
        let record_dir = record_log::dir_of(&path);
        let logs = Logs::open(record_dir.clone(), options.segment_bytes, &conn).map_err(|e| {
            StoreError::Backend(format!("record log {}: {e}", record_dir.display()))
        })?;
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer(&conn, rx, checkpoints, logs);
                if temporary {
                    for suffix in ["", "-wal", "-shm"] {
                        let mut p = path.clone().into_os_string();
                        p.push(suffix);
                        let _ = std::fs::remove_file(p);
                    }
                    let _ = std::fs::remove_dir_all(record_log::dir_of(&path));
                }
            })
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(Self {
            writer: tx,
            writer_thread: thread.thread().clone(),
            readers: Arc::new(readers),
            room: Arc::new(Semaphore::new(queue_bytes)),
            queue_bytes,
            record_dir: Arc::new(record_dir),
        })
    }

    async fn write(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        self.send(writes, true).await
    }

    /// A write nobody's next step waits for (see [`Job::urgent`]).
    async fn write_lazy(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        self.send(writes, false).await
    }

    async fn send(&self, writes: Vec<Write>, urgent: bool) -> Result<u64, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Job {
                writes,
                done: Some(done),
                urgent,
                _room: None,
            })
            .await
            .map_err(|_| StoreError::Task("the writer thread is gone".into()))?;
        if urgent {
            self.writer_thread.unpark();
        }
        wait.await
            .map_err(|_| StoreError::Task("the writer thread is gone".into()))?
    }

    /// Waits for `bytes` of room among the queued rows (all of it, for a larger row).
    async fn room_for(&self, bytes: usize) -> Result<OwnedSemaphorePermit, StoreError> {
        let n = bytes.clamp(1, self.queue_bytes) as u32;
        self.room
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| StoreError::Task("the writer's queue is closed".into()))
    }

    /// Deletes rows of `table` of calls before `before_ms`, a chunk a transaction.
    async fn purge(&self, table: &'static str, before_ms: i64) -> Result<u64, StoreError> {
        let before = first_id_of(before_ms);
        let mut total = 0;
        loop {
            let n = self.write(vec![Write::Purge { table, before }]).await?;
            total += n;
            if n < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            // A free reader if there is one, else wait for the first.
            let guard = readers
                .iter()
                .find_map(|r| r.try_lock().ok())
                .unwrap_or_else(|| readers[0].lock().unwrap_or_else(|p| p.into_inner()));
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// When the writer checkpoints, in WAL frames (pages).
struct Checkpoints {
    /// Past this, a PASSIVE checkpoint after the commit: it copies every frame back (no write
    /// can run beside it), so the next commit restarts the WAL from its beginning. While few
    /// of the commits are waited for.
    soft: u64,
    /// The PASSIVE threshold while callers wait for their commits (see [`Checkpoints::new`]).
    short: u64,
    /// Past this (a reader kept the checkpoint from finishing), a TRUNCATE checkpoint that
    /// waits for the readers: the writer stalls rather than let the WAL grow.
    hard: u64,
}

/// The most frames the long threshold stands for (32 MiB): a checkpoint's stall grows with it.
const SOFT_MAX: u64 = 8192;

/// Whether the writer's callers are waiting for its commits, over the last second or two:
/// a quarter of the jobs or more. A poller's confirmation or a webhook's delivery now and then
/// among thousands of queued audit rows is not; a durable bus's attempts and outcomes are.
#[derive(Default)]
struct Waiting {
    window: Option<std::time::Instant>,
    /// (jobs waited for, all jobs) in the window before this one and in this one.
    before: (u64, u64),
    now: (u64, u64),
}

impl Waiting {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

    fn note(&mut self, waited: u64, all: u64, at: std::time::Instant) {
        let start = *self.window.get_or_insert(at);
        let gone = at.saturating_duration_since(start);
        if gone >= Self::WINDOW {
            // A window with no batch in it counts as an empty one.
            self.before = if gone >= 2 * Self::WINDOW {
                (0, 0)
            } else {
                self.now
            };
            self.now = (0, 0);
            self.window = Some(at);
        }
        self.now.0 += waited;
        self.now.1 += all;
    }

    fn callers_wait(&self) -> bool {
        let waited = self.before.0 + self.now.0;
        let all = self.before.1 + self.now.1;
        waited > 0 && waited * 4 >= all
    }
}

impl Checkpoints {
    /// Two PASSIVE thresholds, because a checkpoint costs two things:
    /// - its syncs (the WAL's, then the database's): at 4 MiB (SQLite's own default) a busy
    ///   embedded gateway checkpointed ten times a second and the machine sat 20% idle waiting
    ///   on them. When nobody waits for the commits (the queued audit rows of an in-process
    ///   bus), the writer checkpoints at half the limit: twice a second, the same bytes copied
    ///   (bench/README, "the record's syncs").
    /// - its length: no commit runs beside it. 32 MiB takes 60–100 ms, a stall for every call
    ///   that waits for its commit (a durable bus's attempts and outcomes). While callers
    ///   wait, the writer checkpoints at an eighth of the limit (at most 4 MiB, ~10 ms).
    fn new(o: SqliteOptions) -> Self {
        let hard = (o.wal_limit / PAGE).max(64);
        Self {
            soft: (hard / 2).clamp(16, SOFT_MAX),
            short: (hard / 8).clamp(16, 1024),
            hard,
        }
    }

    /// The frames past which the writer checkpoints: `waited` when callers wait for its
    /// commits ([`Waiting`]).
    fn threshold(&self, waited: bool) -> u64 {
        if waited {
            self.short
        } else {
            self.soft
        }
    }

    /// After a commit: checkpoints if the WAL is past a threshold.
    fn after_commit(&self, conn: &Connection, waited: bool) {
        let frames = WAL_FRAMES.with(Cell::get);
        if frames < self.threshold(waited) {
            return;
        }
        let mode = if frames >= self.hard {
            "TRUNCATE"
        } else {
            "PASSIVE"
        };
        let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match result {
            // Every frame is back in the database: the next commit starts the WAL over.
            Ok((log, done)) if done >= log => WAL_FRAMES.with(|f| f.set(0)),
            Ok((log, done)) => {
                tracing::debug!(log, done, mode, "a reader held the WAL checkpoint back")
            }
            Err(error) => tracing::warn!(%error, mode, "WAL checkpoint failed"),
        }
    }
}

/// The journal mode and the migrations of a connection that writes. The processes of a split
/// deployment may open one new file at once: the version is read and the migrations run under
/// the write lock, each whole or not at all. Two connections turning a new file to WAL at
/// once can deadlock on its locks, and SQLite then answers one "database is locked" without
/// waiting (CI saw it); that one tries again.
fn prepare_with_retries(conn: &Connection) -> rusqlite::Result<()> {
    let prepare = || -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = write_transaction(conn)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()
    };
    let mut tries = 0;
    loop {
        match prepare() {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                tries += 1;
                if tries >= 50 {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(20 + 10 * tries));
            }
            done => return done,
        }
    }
}

/// A transaction that holds the write lock from its start. Another process on the same file
/// (a split deployment on one host) may commit between a deferred transaction's first read
/// and its first write; SQLite then refuses the write at once ("database is locked", no busy
/// wait), since the snapshot it read is gone. Taken at the start, the lock is waited for.
pub(crate) fn write_transaction(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

/// The writer thread: takes the queued jobs, commits them in one transaction, answers each,
/// then checkpoints when the WAL has grown.
/// If the batch fails, each job is retried alone so one bad write fails only its own caller.
fn writer(
    conn: &Connection,
    mut rx: mpsc::Receiver<Job>,
    checkpoints: Checkpoints,
    mut logs: Logs,
) {
    let drain = |rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>| {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    };
    let mut waiting = Waiting::default();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        drain(&mut rx, &mut batch);
        let started = std::time::Instant::now();
        // One wake-up a batch: asleep for the rest of the linger, unless an urgent job comes
        // (its sender wakes this thread).
        loop {
            let (linger, enough) = if batch.iter().any(|j| j.done.is_some()) {
                (LINGER, LINGER_ENOUGH)
            } else {
                (LINGER_QUEUED, MAX_BATCH)
            };
            if batch.len() >= enough || batch.iter().any(|j| j.urgent) {
                break;
            }
            let Some(left) = linger.checked_sub(started.elapsed()) else {
                break;
            };
            std::thread::park_timeout(left);
            drain(&mut rx, &mut batch);
        }
        let waited = batch.iter().filter(|j| j.done.is_some()).count();
        waiting.note(waited as u64, batch.len() as u64, std::time::Instant::now());
        let appends = appended_logs(batch.iter().flat_map(|j| &j.writes));
        let together = (|| -> rusqlite::Result<Vec<u64>> {
            logs.prepare(conn, &appends)?;
            let tx = write_transaction(conn)?;
            let mut counts = Vec::with_capacity(batch.len());
            let mut prepared = Prepared::default();
            let mut slice = std::time::Instant::now();
            for job in &batch {
                counts.push(apply(&tx, &mut prepared, &mut logs, &job.writes)?);
                if slice.elapsed() >= WRITER_SLICE {
                    std::thread::yield_now();
                    slice = std::time::Instant::now();
                }
            }
            drop(prepared);
            logs.flush(&tx)?;
            tx.commit()?;
            Ok(counts)
        })();
        if together.is_err() {
            logs.discard();
        }
        logs.remove_doomed();
        match together {
            Ok(counts) => {
                for (job, n) in batch.into_iter().zip(counts) {
                    job.answer(Ok(n));
                }
            }
            Err(_) => {
                for job in batch {
                    let appends = appended_logs(&job.writes);
                    let alone = (|| -> rusqlite::Result<u64> {
                        logs.prepare(conn, &appends)?;
                        let tx = write_transaction(conn)?;
                        let n = apply(&tx, &mut Prepared::default(), &mut logs, &job.writes)?;
                        logs.flush(&tx)?;
                        tx.commit()?;
                        Ok(n)
                    })();
                    if alone.is_err() {
                        logs.discard();
                    }
                    logs.remove_doomed();
                    job.answer(alone.map_err(StoreError::from));
                }
            }
        }
        checkpoints.after_commit(conn, waiting.callers_wait());
    }
    logs.close(conn);
}

/// The record's logs that `writes` append to.
fn appended_logs<'a>(writes: impl IntoIterator<Item = &'a Write>) -> Vec<Log> {
    let (mut calls, mut answers) = (false, false);
    for w in writes {
        if let Write::Call(_, answer) = w {
            calls = true;
            answers |= answer.is_some();
        }
    }
    [(calls, Log::Calls), (answers, Log::Answers)]
        .into_iter()
        .filter_map(|(used, log)| used.then_some(log))
        .collect()
}

/// What of an audit row goes to the calls log.
#[derive(serde::Serialize, serde::Deserialize)]
struct Bulk<P, B, R> {
    params: P,
    blobs: B,
    request: R,
}

type BulkRead =
    Bulk<serde_json::Map<String, serde_json::Value>, Vec<schemas::BlobRef>, Option<String>>;

/// What a batch reuses for each of its calls: the statements, prepared once for the batch (a
/// statement taken from the connection's cache costs a hash of its text to find and another
/// to put back on every use, and the audit row's INSERT is long), and the buffer each row's
/// bulk is written into.
#[derive(Default)]
struct Prepared<'c> {
    insert_call: Option<rusqlite::CachedStatement<'c>>,
    /// Each row's bulk is written here before its log takes a copy: one buffer a batch, not
    /// one grown from nothing for every row.
    bulk: Vec<u8>,
}

fn insert_call<'c>(
    c: &'c Connection,
    prepared: &mut Prepared<'c>,
    logs: &mut Logs,
    row: &CallRow,
    answer: Option<&(String, i64)>,
) -> rusqlite::Result<u64> {
    let id = row.call_id.0.as_bytes();
    let bulk = &mut prepared.bulk;
    bulk.clear();
    serde_json::to_writer(
        &mut *bulk,
        &Bulk {
            params: &row.params,
            blobs: &row.blobs,
            request: &row.request,
        },
    )
    .expect("plain data serialises");
    let bulk = logs.push(Log::Calls, id, bulk)?;
    let answer = answer
        .map(|(json, expires)| {
            Ok::<_, rusqlite::Error>((logs.push(Log::Answers, id, json.as_bytes())?, *expires))
        })
        .transpose()?;
    let st = match &mut prepared.insert_call {
        Some(st) => st,
        none => none.insert(c.prepare_cached(
            "INSERT OR REPLACE INTO calls (call_id, bot_id, received_ms, token_fp,
               method, http_method, test_env, params, blobs, outcome, http_status,
               error_code, description, latency_ms, queue_ms, upstream_ms, encoding,
               request, answer_sha256, bulk_seg, bulk_off, bulk_len, answer_seg, answer_off,
               answer_len, answer_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '{}', '[]', ?8, ?9, ?10, ?11, ?12, ?13, ?14,
               ?15, NULL, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
        )?),
    };
    // A sha256's 64 digits decoded in place; any other hex as before.
    let mut sha256 = [0u8; 32];
    let digest: Option<std::borrow::Cow<[u8]>> = match row.answer_sha256.as_deref() {
        Some(h) if hex::decode_to_slice(h, &mut sha256).is_ok() => Some((&sha256[..]).into()),
        Some(h) => hex::decode(h).ok().map(Into::into),
        None => None,
    };
    Ok(st.execute(params![
        id,
        row.bot_id.0,
        row.received_ms,
        row.token_fingerprint,
        row.method,
        row.http_method,
        row.test_env as i64,
        row.outcome.as_str(),
        row.http_status.map(|v| v as i64),
        row.error_code,
        row.description,
        row.latency_ms.map(|v| v as i64),
        row.stages.queue_ms as i64,
        row.stages.upstream_ms as i64,
        row.encoding.as_str(),
        digest,
        bulk.segment,
        bulk.offset,
        bulk.len,
        answer.map(|(p, _)| p.segment),
        answer.map(|(p, _)| p.offset),
        answer.map(|(p, _)| p.len),
        answer.map(|(_, e)| e),
    ])? as u64)
}

fn apply<'c>(
    c: &'c Connection,
    prepared: &mut Prepared<'c>,
    logs: &mut Logs,
    writes: &[Write],
) -> rusqlite::Result<u64> {
    let mut n = 0;
    for w in writes {
        n += match w {
            Write::Call(row, answer) => insert_call(c, prepared, logs, row, answer.as_ref())?,
            Write::PurgeLog { log, before } => logs.purge(c, *log, before)?,
            Write::AnswersBefore { before } => logs.forget_answers(c, before)?,
            Write::Result {
                call_id,
                response,
                expires_ms,
            } => {
                let mut st = c.prepare_cached(
                    "INSERT OR REPLACE INTO results (call_id, response, expires_ms)
                     VALUES (?1, ?2, ?3)",
                )?;
                st.execute(params![call_id, response, expires_ms])? as u64
            }
            Write::Attempt { call_id, now_ms } => insert_attempt(c, call_id, *now_ms)?,
            Write::Begin { call_id, now_ms } => {
                let answered = c
                    .prepare_cached("SELECT 1 FROM results WHERE call_id = ?1 AND expires_ms > ?2")?
                    .exists(params![call_id, now_ms])?;
                if answered {
                    2
                } else {
                    insert_attempt(c, call_id, *now_ms)?
                }
            }
            Write::File(f) => {
                // A path belongs to one file: a stale row holding it (the same file under an
                // older unique id) gives way.
                c.prepare_cached("DELETE FROM files WHERE path = ?1")?
                    .execute(params![f.path])?;
                let mut st = c.prepare_cached(
                    "INSERT OR REPLACE INTO files (bot_id, file_unique_id, file_id, path, sha256,
                       size, blob_key, file_name, mime_type, stored_ms, served_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                )?;
                st.execute(params![
                    f.bot_id.0,
                    f.file_unique_id,
                    f.file_id,
                    f.path,
                    f.blob.sha256,
                    f.blob.size as i64,
                    f.blob.key,
                    f.file_name,
                    f.mime_type,
                    f.stored_ms,
                ])? as u64
            }
            Write::Upload {
                key,
                file_id: Some(file_id),
                now_ms,
            } => c
                .prepare_cached(
                    "INSERT OR REPLACE INTO uploads (bot_id, sha256, kind, file_name, file_id,
                       stored_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    key.bot_id.0,
                    key.sha256,
                    key.kind.param(),
                    key.file_name,
                    file_id,
                    now_ms
                ])? as u64,
            Write::Upload {
                key, file_id: None, ..
            } => c
                .prepare_cached(
                    "DELETE FROM uploads WHERE bot_id = ?1 AND sha256 = ?2 AND kind = ?3
                       AND file_name = ?4",
                )?
                .execute(params![
                    key.bot_id.0,
                    key.sha256,
                    key.kind.param(),
                    key.file_name
                ])? as u64,
            Write::Session {
                bot_id,
                sealed,
                now_ms,
            } => c
                .prepare_cached(
                    "INSERT OR REPLACE INTO mtproto_sessions (bot_id, sealed, updated_ms)
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![bot_id, sealed, now_ms])? as u64,
            Write::Sql { sql, values } => {
                c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))? as u64
            }
            Write::PurgeCalls { before } => {
                c.prepare_cached(
                    "DELETE FROM calls WHERE call_id IN
                       (SELECT call_id FROM calls WHERE call_id < ?1 ORDER BY call_id LIMIT ?2)",
                )?
                .execute(params![before, PURGE_CHUNK as i64])? as u64
            }
            // The oldest rows first, by key: no expiry index, and no scan past what expired.
            Write::Purge { table, before } => {
                let sql = format!(
                    "DELETE FROM {table} WHERE call_id IN
                       (SELECT call_id FROM {table} WHERE call_id < ?1 ORDER BY call_id
                        LIMIT ?2)"
                );
                c.prepare_cached(&sql)?
                    .execute(params![before, PURGE_CHUNK as i64])? as u64
            }
        };
    }
    Ok(n)
}

/// Records an attempt unless one exists; counts 1 when it is new.
fn insert_attempt(c: &Connection, call_id: &[u8; 16], now_ms: i64) -> rusqlite::Result<u64> {
    let mut st =
        c.prepare_cached("INSERT OR IGNORE INTO attempts (call_id, started_ms) VALUES (?1, ?2)")?;
    Ok(st.execute(params![call_id, now_ms])? as u64)
}

/// The next 16-byte id after `id` (as a big-endian number); `None` after the last.
fn successor(mut id: [u8; 16]) -> Option<[u8; 16]> {
    for b in id.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(id);
        }
    }
    None
}

/// The smallest UUIDv7 of `ms`: every call id made before `ms` sorts below it.
fn first_id_of(ms: i64) -> [u8; 16] {
    // Past the 48 bits of a UUIDv7's time: above every id.
    if ms >= 1 << 48 {
        return [0xff; 16];
    }
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&(ms.max(0) as u64).to_be_bytes()[2..]);
    id
}

/// The bytes a body takes inline in a record.
fn inline_size(body: &schemas::BodyBytes) -> usize {
    match body {
        schemas::BodyBytes::Json { json } => json.get().len(),
        schemas::BodyBytes::Utf8 { text } => text.len(),
        schemas::BodyBytes::Base64 { data } => data.len(),
        schemas::BodyBytes::Blob { .. } => 0,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

fn result_write(call_id: CallId, response: &Response, expires_ms: i64) -> Write {
    Write::Result {
        call_id: *call_id.0.as_bytes(),
        response: json(response),
        expires_ms,
    }
}

/// A row read from `calls`, and where its bulk and its answer lie in the logs, if there.
type CallRead = (
    Result<CallRow, StoreError>,
    Option<record_log::Ptr>,
    Option<record_log::Ptr>,
);

/// The parameters, blobs and sealed request of a row, from its entry in the calls log (an
/// unreadable entry is logged and leaves the row without them, as an unreadable answer does).
fn fill_bulk(row: &mut CallRow, bulk: &[u8]) {
    match serde_json::from_slice::<BulkRead>(bulk) {
        Ok(b) => {
            row.params = b.params;
            row.blobs = b.blobs;
            row.request = b.request;
        }
        Err(error) => tracing::warn!(%error, "a record log entry is unreadable"),
    }
}

/// An answer as an audit row shows it; an unreadable one loses the answer, not the row (nor
/// the page).
fn readable_answer(json: &str) -> Option<String> {
    match crate::answer_text(json) {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(%error, "a stored answer is unreadable");
            None
        }
    }
}

fn row_to_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRead> {
    let bulk = record_log::ptr_of(r, "bulk")?;
    let answer_at = record_log::ptr_of(r, "answer")?;
    let call_id: Vec<u8> = r.get("call_id")?;
    let params: String = r.get("params")?;
    let blobs: String = r.get("blobs")?;
    let outcome: String = r.get("outcome")?;
    let encoding: Option<String> = r.get("encoding")?;
    let digest: Option<Vec<u8>> = r.get("answer_sha256")?;
    let answer: Option<String> = r.get("response")?;
    let build = || -> Result<CallRow, StoreError> {
        Ok(CallRow {
            call_id: uuid::Uuid::from_slice(&call_id)
                .map(CallId)
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
            bot_id: BotId(r.get("bot_id")?),
            received_ms: r.get("received_ms")?,
            token_fingerprint: r.get("token_fp")?,
            method: r.get("method")?,
            http_method: r.get("http_method")?,
            test_env: r.get::<_, i64>("test_env")? != 0,
            params: serde_json::from_str(&params)
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
            blobs: serde_json::from_str(&blobs)
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
            outcome: Outcome::parse(&outcome)?,
            http_status: r.get::<_, Option<i64>>("http_status")?.map(|v| v as u16),
            error_code: r.get("error_code")?,
            description: r.get("description")?,
            latency_ms: r.get::<_, Option<i64>>("latency_ms")?.map(|v| v as u64),
            stages: Stages {
                queue_ms: r.get::<_, Option<i64>>("queue_ms")?.unwrap_or(0) as u64,
                upstream_ms: r.get::<_, Option<i64>>("upstream_ms")?.unwrap_or(0) as u64,
            },
            encoding: encoding
                .as_deref()
                .and_then(Encoding::parse)
                .unwrap_or(Encoding::Query),
            request: r.get("request")?,
            answer_sha256: digest.map(hex::encode),
            answer: answer.as_deref().and_then(readable_answer),
        })
    };
    Ok((build(), bulk, answer_at))
}

fn row_to_file(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        bot_id: BotId(r.get("bot_id")?),
        file_unique_id: r.get("file_unique_id")?,
        file_id: r.get("file_id")?,
        path: r.get("path")?,
        blob: schemas::BlobRef {
            sha256: r.get("sha256")?,
            size: r.get::<_, i64>("size")?.max(0) as u64,
            key: r.get("blob_key")?,
        },
        file_name: r.get("file_name")?,
        mime_type: r.get("mime_type")?,
        stored_ms: r.get("stored_ms")?,
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn put_session(&self, bot_id: BotId, sealed: &str) -> Result<(), StoreError> {
        self.write(vec![Write::Session {
            bot_id: bot_id.0,
            sealed: sealed.to_owned(),
            now_ms: schemas::now_ms(),
        }])
        .await?;
        Ok(())
    }

    async fn session(&self, bot_id: BotId) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT sealed FROM mtproto_sessions WHERE bot_id = ?1")?
                    .query_row(params![bot_id.0], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }
}

#[async_trait]
impl FileStore for SqliteStore {
    async fn put_file(&self, row: &FileRow) -> Result<(), StoreError> {
        self.write(vec![Write::File(Box::new(row.clone()))]).await?;
        Ok(())
    }

    async fn file_by_unique_id(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        let unique = file_unique_id.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT * FROM files WHERE bot_id = ?1 AND file_unique_id = ?2")?
                    .query_row(params![bot_id.0, unique], row_to_file)
                    .optional()?,
            )
        })
        .await
    }

    async fn file_by_path(&self, path: &str) -> Result<Option<FileRow>, StoreError> {
        let path = path.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT * FROM files WHERE path = ?1")?
                .query_row(params![path], row_to_file)
                .optional()?)
        })
        .await
    }

    async fn touch_file(
        &self,
        bot_id: BotId,
        file_unique_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write_lazy(vec![Write::Sql {
            sql: "UPDATE files SET served_ms = ?3 WHERE bot_id = ?1 AND file_unique_id = ?2",
            values: vec![
                bot_id.0.into(),
                file_unique_id.to_owned().into(),
                now_ms.into(),
            ],
        }])
        .await?;
        Ok(())
    }

    async fn file_usage(&self) -> Result<Vec<(BotId, u64, u64)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT bot_id, COUNT(*), SUM(size) FROM files GROUP BY bot_id ORDER BY bot_id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    BotId(r.get(0)?),
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn files_least_served(
        &self,
        bot_id: Option<BotId>,
        limit: usize,
    ) -> Result<Vec<crate::StoredFile>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM files WHERE ?1 IS NULL OR bot_id = ?1
                 ORDER BY served_ms, bot_id, file_unique_id LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![bot_id.map(|b| b.0), limit.min(i64::MAX as usize) as i64],
                |r| {
                    Ok(crate::StoredFile {
                        served_ms: r
                            .get::<_, Option<i64>>("served_ms")?
                            .unwrap_or(r.get("stored_ms")?),
                        row: row_to_file(r)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn forget_file(&self, bot_id: BotId, file_unique_id: &str) -> Result<(), StoreError> {
        self.write(vec![Write::Sql {
            sql: "DELETE FROM files WHERE bot_id = ?1 AND file_unique_id = ?2",
            values: vec![bot_id.0.into(), file_unique_id.to_owned().into()],
        }])
        .await?;
        Ok(())
    }

    async fn blob_in_use(&self, blob_key: &str) -> Result<bool, StoreError> {
        let key = blob_key.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM files WHERE blob_key = ?1 LIMIT 1")?
                    .exists(params![key])?,
            )
        })
        .await
    }

    async fn put_upload(&self, key: &UploadKey, file_id: &str) -> Result<(), StoreError> {
        self.write(vec![Write::Upload {
            key: key.clone(),
            file_id: Some(file_id.to_owned()),
            now_ms: schemas::now_ms(),
        }])
        .await?;
        Ok(())
    }

    async fn cached_upload(&self, key: &UploadKey) -> Result<Option<String>, StoreError> {
        let key = key.clone();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT file_id FROM uploads WHERE bot_id = ?1 AND sha256 = ?2 AND kind = ?3
                   AND file_name = ?4",
            )?
            .query_row(
                params![key.bot_id.0, key.sha256, key.kind.param(), key.file_name],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn forget_upload(&self, key: &UploadKey) -> Result<(), StoreError> {
        self.write(vec![Write::Upload {
            key: key.clone(),
            file_id: None,
            now_ms: schemas::now_ms(),
        }])
        .await?;
        Ok(())
    }
}

impl SqliteStore {
    async fn sql(
        &self,
        sql: &'static str,
        values: Vec<rusqlite::types::Value>,
    ) -> Result<u64, StoreError> {
        self.write(vec![Write::Sql { sql, values }]).await
    }
}

fn webhook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookRow> {
    Ok(WebhookRow {
        bot_id: BotId(r.get(0)?),
        url: r.get(1)?,
        secret_token: r.get(2)?,
        max_connections: r.get(3)?,
        allowed_updates: r.get(4)?,
        certificate: r.get(5)?,
        token_sealed: r.get(6)?,
        test_env: r.get::<_, i64>(7)? != 0,
        poll_offset: r.get(8)?,
        last_error_date: r.get(9)?,
        last_error_message: r.get(10)?,
        telegram_hook: r.get::<_, i64>(11)? != 0,
    })
}

const WEBHOOK_COLUMNS: &str = "SELECT bot_id, url, secret_token, max_connections, allowed_updates,
    certificate, token_sealed, test_env, poll_offset, last_error_date, last_error_message,
    telegram_hook FROM webhooks";

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn put_webhook(&self, row: &WebhookRow) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        let opt = |s: &Option<String>| s.clone().map(V::Text).unwrap_or(V::Null);
        self.sql(
            "INSERT INTO webhooks (bot_id, url, secret_token, max_connections, allowed_updates,
               certificate, token_sealed, test_env, poll_offset, telegram_hook)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (bot_id) DO UPDATE SET url = ?2, secret_token = ?3,
               max_connections = ?4, allowed_updates = ?5, certificate = ?6,
               token_sealed = ?7, test_env = ?8, telegram_hook = ?10",
            vec![
                V::Integer(row.bot_id.0),
                V::Text(row.url.clone()),
                opt(&row.secret_token),
                V::Integer(row.max_connections),
                opt(&row.allowed_updates),
                opt(&row.certificate),
                V::Text(row.token_sealed.clone()),
                V::Integer(row.test_env as i64),
                V::Integer(row.poll_offset),
                V::Integer(row.telegram_hook as i64),
            ],
        )
        .await?;
        Ok(())
    }

    async fn webhook(&self, bot_id: BotId) -> Result<Option<WebhookRow>, StoreError> {
        self.read(move |c| {
            Ok(
                c.prepare_cached(&format!("{WEBHOOK_COLUMNS} WHERE bot_id = ?1"))?
                    .query_row(params![bot_id.0], webhook_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(WEBHOOK_COLUMNS)?;
            let rows = st.query_map([], webhook_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn delete_webhook(&self, bot_id: BotId, drop_pending: bool) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        let mut writes = vec![Write::Sql {
            sql: "DELETE FROM webhooks WHERE bot_id = ?1",
            values: vec![V::Integer(bot_id.0)],
        }];
        if drop_pending {
            writes.push(Write::Sql {
                sql: "UPDATE updates SET delivered = 1, delivered_ms = ?2
                      WHERE bot_id = ?1 AND delivered = 0",
                values: vec![V::Integer(bot_id.0), V::Integer(schemas::now_ms())],
            });
        }
        self.write(writes).await?;
        Ok(())
    }

    async fn set_poll_offset(&self, bot_id: BotId, offset: i64) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        self.sql(
            "UPDATE webhooks SET poll_offset = ?2 WHERE bot_id = ?1",
            vec![V::Integer(bot_id.0), V::Integer(offset)],
        )
        .await?;
        Ok(())
    }

    async fn set_webhook_error(
        &self,
        bot_id: BotId,
        error: Option<(i64, String)>,
    ) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        let (date, message) = match error {
            Some((d, m)) => (V::Integer(d), V::Text(m)),
            None => (V::Null, V::Null),
        };
        self.sql(
            "UPDATE webhooks SET last_error_date = ?2, last_error_message = ?3 WHERE bot_id = ?1",
            vec![V::Integer(bot_id.0), date, message],
        )
        .await?;
        Ok(())
    }

    async fn put_update(
        &self,
        bot_id: BotId,
        update_id: i64,
        update: &str,
    ) -> Result<bool, StoreError> {
        use rusqlite::types::Value as V;
        let n = self
            .sql(
                "INSERT OR IGNORE INTO updates (bot_id, update_id, body, delivered, kept_ms)
                 VALUES (?1, ?2, ?3, 0, ?4)",
                vec![
                    V::Integer(bot_id.0),
                    V::Integer(update_id),
                    V::Text(update.to_owned()),
                    V::Integer(schemas::now_ms()),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn purge_updates(&self, before_ms: i64) -> Result<u64, StoreError> {
        use rusqlite::types::Value as V;
        let now = schemas::now_ms();
        // Dropped, as delivered: still remembered against a replayed record until purged.
        self.sql(
            "UPDATE updates SET delivered = 1, delivered_ms = ?2
             WHERE delivered = 0 AND kept_ms < ?1",
            vec![
                V::Integer(now - crate::PENDING_UPDATES_KEPT_MS),
                V::Integer(now),
            ],
        )
        .await?;
        // A reader nobody used since is forgotten with them (a new one starts at the first
        // unconfirmed update).
        self.sql(
            "DELETE FROM readers WHERE read_ms < ?1",
            vec![V::Integer(before_ms)],
        )
        .await?;
        self.sql(
            "DELETE FROM updates WHERE delivered = 1 AND delivered_ms < ?1",
            vec![V::Integer(before_ms)],
        )
        .await
    }

    async fn updates_from(
        &self,
        bot_id: BotId,
        from: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT update_id, body FROM updates WHERE bot_id = ?1 AND update_id >= ?2
                 ORDER BY update_id LIMIT ?3",
            )?;
            let rows = st.query_map(params![bot_id.0, from, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn confirm_updates(&self, bot_id: BotId, below: i64) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        self.sql(
            "UPDATE updates SET delivered = 1, delivered_ms = ?3
             WHERE bot_id = ?1 AND delivered = 0 AND update_id < ?2",
            vec![
                V::Integer(bot_id.0),
                V::Integer(below),
                V::Integer(schemas::now_ms()),
            ],
        )
        .await?;
        Ok(())
    }

    async fn put_reader(&self, bot_id: BotId, reader: &ReaderRow) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        self.sql(
            "INSERT INTO readers (bot_id, reader, next_update_id, read_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bot_id, reader) DO UPDATE SET next_update_id = ?3, read_ms = ?4",
            vec![
                V::Integer(bot_id.0),
                V::Text(reader.reader.clone()),
                V::Integer(reader.next_update_id),
                V::Integer(reader.read_ms),
            ],
        )
        .await?;
        Ok(())
    }

    async fn readers(&self, bot_id: BotId) -> Result<Vec<ReaderRow>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT reader, next_update_id, read_ms FROM readers WHERE bot_id = ?1
                 ORDER BY reader",
            )?;
            let rows = st.query_map(params![bot_id.0], |r| {
                Ok(ReaderRow {
                    reader: r.get(0)?,
                    next_update_id: r.get(1)?,
                    read_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn lease_webhook(
        &self,
        bot_id: BotId,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        use rusqlite::types::Value as V;
        let n = self
            .sql(
                "UPDATE webhooks SET lease_owner = ?2, lease_until = ?3
                 WHERE bot_id = ?1
                   AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < ?4)",
                vec![
                    V::Integer(bot_id.0),
                    V::Text(owner.to_owned()),
                    V::Integer(until_ms),
                    V::Integer(now_ms),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn put_updates(&self, updates: &[(BotId, i64, String)]) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        let now = schemas::now_ms();
        let writes = updates
            .iter()
            .map(|(bot, id, body)| Write::Sql {
                sql: "INSERT OR IGNORE INTO updates (bot_id, update_id, body, delivered, kept_ms)
                      VALUES (?1, ?2, ?3, 0, ?4)",
                values: vec![
                    V::Integer(bot.0),
                    V::Integer(*id),
                    V::Text(body.clone()),
                    V::Integer(now),
                ],
            })
            .collect();
        self.write(writes).await?;
        Ok(())
    }

    async fn pending_updates(
        &self,
        bot_id: BotId,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT update_id, body FROM updates WHERE bot_id = ?1 AND delivered = 0
                 ORDER BY update_id LIMIT ?2",
            )?;
            let rows = st.query_map(params![bot_id.0, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn pending_count(&self, bot_id: BotId) -> Result<u64, StoreError> {
        self.read(move |c| {
            Ok(
                c.prepare_cached(
                    "SELECT COUNT(*) FROM updates WHERE bot_id = ?1 AND delivered = 0",
                )?
                .query_row(params![bot_id.0], |r| r.get::<_, i64>(0))? as u64,
            )
        })
        .await
    }

    async fn delivered(&self, bot_id: BotId, update_id: i64) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        self.sql(
            "UPDATE updates SET delivered = 1, delivered_ms = ?3
             WHERE bot_id = ?1 AND update_id = ?2",
            vec![
                V::Integer(bot_id.0),
                V::Integer(update_id),
                V::Integer(schemas::now_ms()),
            ],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl CallStore for SqliteStore {
    async fn record_call(&self, row: &CallRow) -> Result<(), StoreError> {
        self.write_lazy(vec![Write::Call(Box::new(row.clone()), None)])
            .await?;
        Ok(())
    }

    async fn queue_call(&self, row: CallRow) -> Result<(), StoreError> {
        let room = self.room_for(queued_size(&row, 0)).await?;
        self.writer
            .send(Job {
                writes: vec![Write::Call(Box::new(row), None)],
                done: None,
                urgent: false,
                _room: Some(room),
            })
            .await
            .map_err(|_| StoreError::Task("the writer thread is gone".into()))
    }

    /// An urgent job behind the queued ones: the writer takes jobs in order and commits a
    /// batch before answering any of it, so its answer means everything before it is written.
    async fn flush(&self) -> Result<(), StoreError> {
        self.write(Vec::new()).await.map(|_| ())
    }

    async fn calls(&self, q: &CallQuery) -> Result<Vec<CallRow>, StoreError> {
        let q = q.clone();
        let now = schemas::now_ms();
        let dir = self.record_dir.clone();
        self.read(move |c| {
            // One statement for every filter: an absent filter is a NULL that passes. The
            // window and the cursor are ranges of the key (or of the bot index's key).
            // A bot's calls are a range of the bot index; every bot's, a range of the key.
            let columns = if q.light {
                "c.call_id, c.bot_id, c.received_ms, c.token_fp, c.method, c.http_method,
                 c.test_env, '{}' AS params, '[]' AS blobs, c.outcome, c.http_status,
                 c.error_code, c.description, c.latency_ms, c.queue_ms, c.upstream_ms,
                 c.encoding, NULL AS request, c.answer_sha256, NULL AS response,
                 NULL AS bulk_seg, NULL AS bulk_off, NULL AS bulk_len, NULL AS answer_seg,
                 NULL AS answer_off, NULL AS answer_len
                 FROM calls c JOIN (SELECT ?8) AS now"
            } else {
                // An answer in the answers log counts while it has not expired nor been
                // purged; a durable bus's is in `results`.
                "c.call_id, c.bot_id, c.received_ms, c.token_fp, c.method, c.http_method,
                 c.test_env, c.params, c.blobs, c.outcome, c.http_status, c.error_code,
                 c.description, c.latency_ms, c.queue_ms, c.upstream_ms, c.encoding,
                 c.request, c.answer_sha256, r.response, c.bulk_seg, c.bulk_off, c.bulk_len,
                 CASE WHEN c.answer_expires_ms > ?8
                   AND NOT (c.call_id < coalesce(s.answers_before, x'')
                     AND c.answer_seg <= coalesce(s.answers_seg, 0))
                   THEN c.answer_seg END AS answer_seg,
                 c.answer_off, c.answer_len
                 FROM calls c
                   LEFT JOIN results r ON r.call_id = c.call_id AND r.expires_ms > ?8
                   LEFT JOIN record_state s ON s.id = 0"
            };
            let sql = format!(
                "SELECT {columns}
                 WHERE c.call_id >= ?1 AND c.call_id < ?2 AND {}
                   AND (?4 IS NULL OR c.method = ?4 COLLATE NOCASE)
                   AND (?5 IS NULL OR c.http_status = ?5)
                   AND (?6 IS NULL OR c.error_code = ?6)
                 ORDER BY c.call_id LIMIT ?7",
                if q.bot_id.is_some() {
                    "c.bot_id = ?3"
                } else {
                    "?3 IS NULL"
                }
            );
            let mut st = c.prepare_cached(&sql)?;
            // One lower bound (two on one column and SQLite ranges over one, filtering by
            // the other: each page would scan from the window's start).
            let mut lo = first_id_of(q.from_ms);
            if let Some(next) = q.after.and_then(|a| successor(*a.0.as_bytes())) {
                lo = lo.max(next);
            } else if q.after.is_some() {
                return Ok(Vec::new());
            }
            let rows = st.query_map(
                params![
                    lo,
                    first_id_of(q.to_ms),
                    q.bot_id.map(|b| b.0),
                    q.method,
                    q.http_status.map(i64::from),
                    q.error_code,
                    q.limit.min(i64::MAX as usize) as i64,
                    now,
                ],
                row_to_call,
            )?;
            let mut reader = record_log::Reader::new(&dir);
            let mut out = Vec::new();
            for r in rows {
                let (row, bulk, answer) = r?;
                let mut row = row?;
                if let Some(bulk) = bulk.and_then(|p| reader.read(p)) {
                    fill_bulk(&mut row, &bulk);
                }
                if row.answer.is_none() {
                    if let Some(answer) = answer.and_then(|p| reader.read(p)) {
                        row.answer = readable_answer(&String::from_utf8_lossy(&answer));
                    }
                }
                out.push(row);
            }
            Ok(out)
        })
        .await
    }

    async fn purge_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        let before = first_id_of(before_ms);
        let mut total = 0;
        loop {
            let n = self.write(vec![Write::PurgeCalls { before }]).await?;
            total += n;
            if n < PURGE_CHUNK {
                break;
            }
        }
        self.write(vec![Write::PurgeLog {
            log: Log::Calls,
            before,
        }])
        .await?;
        Ok(total)
    }

    async fn count_calls_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let before = first_id_of(before_ms);
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM calls WHERE call_id < ?1")?
                .query_row(params![before], |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl OutcomeStore for SqliteStore {
    async fn record_outcome(
        &self,
        row: &CallRow,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.write_lazy(vec![
            result_write(row.call_id, response, expires_ms),
            Write::Call(Box::new(row.clone()), None),
        ])
        .await?;
        Ok(())
    }

    async fn queue_outcome(
        &self,
        row: CallRow,
        response: Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        // Kept in the answers log, not `results`: nothing redelivers a call on this path (see
        // `CallStore::queue_call`), so only audits read it, through its row.
        // Sized for the answer's body at once (serde_json starts small and doubles).
        let mut answer = Vec::with_capacity(inline_size(&response.body) + 192);
        serde_json::to_writer(&mut answer, &response).expect("plain data serialises");
        let answer = String::from_utf8(answer).expect("serde_json writes UTF-8");
        let room = self.room_for(queued_size(&row, answer.len())).await?;
        self.writer
            .send(Job {
                writes: vec![Write::Call(Box::new(row), Some((answer, expires_ms)))],
                done: None,
                urgent: false,
                _room: Some(room),
            })
            .await
            .map_err(|_| StoreError::Task("the writer thread is gone".into()))
    }

    async fn put_result(
        &self,
        call_id: CallId,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(vec![result_write(call_id, response, expires_ms)])
            .await?;
        Ok(())
    }

    async fn get_result(&self, call_id: CallId) -> Result<Option<Response>, StoreError> {
        let now = schemas::now_ms();
        let dir = self.record_dir.clone();
        self.read(move |c| {
            let id = call_id.0.as_bytes();
            let body: Option<String> = c
                .prepare_cached(
                    "SELECT response FROM results WHERE call_id = ?1 AND expires_ms > ?2",
                )?
                .query_row(params![id, now], |r| r.get(0))
                .optional()?;
            if let Some(body) = body {
                return crate::decode_response(&body).map(Some);
            }
            // Kept for the audit only (embedded mode): in the answers log.
            let at = c
                .prepare_cached(
                    "SELECT c.answer_seg, c.answer_off, c.answer_len FROM calls c
                       LEFT JOIN record_state s ON s.id = 0
                     WHERE c.call_id = ?1 AND c.answer_expires_ms > ?2
                       AND NOT (c.call_id < coalesce(s.answers_before, x'')
                         AND c.answer_seg <= coalesce(s.answers_seg, 0))",
                )?
                .query_row(params![id, now], |r| record_log::ptr_of(r, "answer"))
                .optional()?
                .flatten();
            let Some(body) = at.and_then(|p| record_log::Reader::new(&dir).read(p)) else {
                return Ok(None);
            };
            crate::decode_response(&String::from_utf8_lossy(&body)).map(Some)
        })
        .await
    }

    /// The `results` rows (a durable bus's outcomes) and the answers in the answers log
    /// (embedded mode's): how many of both.
    async fn purge_results(&self, before_ms: i64) -> Result<u64, StoreError> {
        let n = self.purge("results", before_ms).await?;
        let before = first_id_of(before_ms);
        let answers = self.write(vec![Write::AnswersBefore { before }]).await?;
        self.write(vec![Write::PurgeLog {
            log: Log::Answers,
            before,
        }])
        .await?;
        Ok(n + answers)
    }

    async fn purge_attempts(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.purge("attempts", before_ms).await
    }

    /// One trip to the writer thread on the hot path (the result is read only when it exists).
    async fn begin(&self, call_id: CallId, _expires_ms: i64) -> Result<crate::Begin, StoreError> {
        let state = self
            .write(vec![Write::Begin {
                call_id: *call_id.0.as_bytes(),
                now_ms: schemas::now_ms(),
            }])
            .await?;
        Ok(match state {
            1 => crate::Begin::Fresh,
            0 => crate::Begin::InFlight,
            _ => match self.get_result(call_id).await? {
                Some(r) => crate::Begin::Done(r),
                None => crate::Begin::InFlight,
            },
        })
    }

    async fn attempted(&self, call_id: CallId) -> Result<bool, StoreError> {
        let id = *call_id.0.as_bytes();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM attempts WHERE call_id = ?1")?
                    .exists(params![id])?,
            )
        })
        .await
    }

    async fn mark_attempt(&self, call_id: CallId, _expires_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .write(vec![Write::Attempt {
                call_id: *call_id.0.as_bytes(),
                now_ms: schemas::now_ms(),
            }])
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl BotStore for SqliteStore {
    async fn put_bot_username(&self, bot_id: BotId, username: &str) -> Result<(), StoreError> {
        // Urgent: a getMe's answer waits for it (rare: not worth a linger).
        self.write(vec![Write::Sql {
            sql: "INSERT OR REPLACE INTO bot_usernames (username, bot_id, updated_ms)
                  VALUES (?1, ?2, ?3)",
            values: vec![
                username.to_owned().into(),
                bot_id.0.into(),
                schemas::now_ms().into(),
            ],
        }])
        .await?;
        Ok(())
    }

    async fn put_peer(
        &self,
        bot_id: BotId,
        username: &str,
        peer_id: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        // The bot's expired entries go with each new one: the table holds what its bots
        // resolved within the TTL, no more. Urgent: the call that resolved it waits.
        self.write(vec![
            Write::Sql {
                sql: "DELETE FROM peers WHERE bot_id = ?1 AND expires_ms <= ?2",
                values: vec![bot_id.0.into(), schemas::now_ms().into()],
            },
            Write::Sql {
                sql: "INSERT OR REPLACE INTO peers (bot_id, username, peer_id, expires_ms)
                      VALUES (?1, ?2, ?3, ?4)",
                values: vec![
                    bot_id.0.into(),
                    username.to_lowercase().into(),
                    peer_id.into(),
                    expires_ms.into(),
                ],
            },
        ])
        .await?;
        Ok(())
    }

    async fn peer(&self, bot_id: BotId, username: &str) -> Result<Option<i64>, StoreError> {
        let username = username.to_lowercase();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT peer_id FROM peers WHERE bot_id = ?1 AND username = ?2 AND expires_ms > ?3",
            )?
            .query_row(params![bot_id.0, username, schemas::now_ms()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?)
        })
        .await
    }

    async fn put_flood_settings(&self, bot_id: BotId, settings: &str) -> Result<(), StoreError> {
        use rusqlite::types::Value as V;
        self.sql(
            "INSERT INTO flood_settings (bot_id, settings) VALUES (?1, ?2)
             ON CONFLICT (bot_id) DO UPDATE SET settings = ?2",
            vec![V::Integer(bot_id.0), V::Text(settings.to_owned())],
        )
        .await?;
        Ok(())
    }

    async fn flood_settings(&self) -> Result<Vec<(BotId, String)>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT bot_id, settings FROM flood_settings")?;
            let rows = st.query_map([], |r| Ok((BotId(r.get(0)?), r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn bot_by_username(&self, username: &str) -> Result<Option<BotId>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT bot_id FROM bot_usernames WHERE username = ?1")?
                    .query_row(params![username], |r| r.get::<_, i64>(0))
                    .optional()?
                    .map(BotId),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulky_row(bot: i64, ms: i64) -> CallRow {
        let mut row = crate::testsuite::call_row(bot, ms, "sendMessage");
        row.params
            .insert("text".into(), serde_json::Value::String("x".repeat(2000)));
        row.request = Some("r".repeat(1000));
        row
    }

    fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    fn bytes_in(dir: &Path) -> u64 {
        files_in(dir)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// An audit row's bulk (its parameters, blobs, sealed request) and its answer go to the
    /// record's logs, not to the database, and read back whole: the database holds what is
    /// searched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_record_bulk_is_in_its_logs() {
        let (dir, path) = store_path();
        let s = SqliteStore::open(&path).unwrap();
        let rows: Vec<CallRow> = (0..500).map(|i| bulky_row(90, 1_000 + i)).collect();
        for row in &rows {
            s.queue_outcome(
                row.clone(),
                crate::testsuite::ok_response(),
                schemas::now_ms() + 60_000,
            )
            .await
            .unwrap();
        }
        s.flush().await.unwrap();
        let read = s
            .calls(&CallQuery::bot(BotId(90), 0, i64::MAX, 1000))
            .await
            .unwrap();
        let answered: Vec<CallRow> = rows
            .into_iter()
            .map(|mut r| {
                r.answer = Some(r#"{"ok":true,"result":true}"#.into());
                r
            })
            .collect();
        assert_eq!(read, answered);
        let logs = bytes_in(&record_log::dir_of(&path));
        assert!(logs > 500 * 3_000, "the logs hold the bulk: {logs} bytes");
        // In the database, the rows' searched columns: no bulk, no result.
        let (bulk, results): (i64, i64) = s
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT SUM(length(params) + length(blobs)
                               + coalesce(length(request), 0)) FROM calls),
                            (SELECT COUNT(*) FROM results)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!((bulk, results), (500 * 4, 0), "'{{}}' and '[]' a row");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Retention removes whole segments of the logs once every call in them is past it, and
    /// a purge of results forgets the answers in the log whatever their expiry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_removes_log_segments() {
        let (dir, path) = store_path();
        let s = SqliteStore::open_with(
            &path,
            SqliteOptions {
                segment_bytes: 1,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let later = schemas::now_ms() + 60_000;
        let ok = crate::testsuite::ok_response();
        // Each flushed batch fills its segment: the next begins another.
        for ms in [1_000, 2_000, 10_000, 11_000] {
            s.queue_outcome(bulky_row(91, ms), ok.clone(), later)
                .await
                .unwrap();
            s.flush().await.unwrap();
        }
        let record = record_log::dir_of(&path);
        // Segments with entries (a batch without any may have begun an empty one).
        let segments = || {
            files_in(&record)
                .iter()
                .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
                .count()
        };
        let before = segments();
        assert_eq!(before, 8, "a calls and an answers segment for each batch");
        assert_eq!(s.purge_calls(5_000).await.unwrap(), 2);
        let left = s
            .calls(&CallQuery::bot(BotId(91), 0, i64::MAX, 10))
            .await
            .unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(
            left[0].params,
            bulky_row(91, 10_000).params,
            "the bulk stays"
        );
        assert!(left.iter().all(|r| r.answer.is_some()));
        // The calls segments of the two purged rows are gone; their answers stay.
        assert_eq!(segments(), before - 2);
        s.purge_results(10_500).await.unwrap();
        let left = s
            .calls(&CallQuery::bot(BotId(91), 0, i64::MAX, 10))
            .await
            .unwrap();
        assert_eq!(left[0].answer, None, "purged, though not expired");
        assert!(left[1].answer.is_some());
        let id = left[0].call_id;
        assert_eq!(s.get_result(id).await.unwrap(), None);
        assert_eq!(segments(), before - 5);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A purge of results forgets the answers written so far of calls before its cut, in
    /// segments still open too (by the cut kept in `record_state`), whatever their expiry;
    /// an answer written after it stands, whatever its call's time, and the next purge
    /// forgets (and counts) it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_of_results_forgets_answers_written_before_it() {
        let (dir, path) = store_path();
        let s = SqliteStore::open(&path).unwrap();
        let later = schemas::now_ms() + 60_000;
        let ok = crate::testsuite::ok_response();
        let (old, new) = (bulky_row(94, 1_000), bulky_row(94, 20_000));
        for row in [&old, &new] {
            s.queue_outcome(row.clone(), ok.clone(), later)
                .await
                .unwrap();
        }
        s.flush().await.unwrap();
        assert_eq!(s.purge_results(10_000).await.unwrap(), 1);
        let answers = |s: SqliteStore| async move {
            s.calls(&CallQuery::bot(BotId(94), 0, i64::MAX, 10))
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.answer.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(answers(s.clone()).await, [false, true]);
        assert_eq!(s.get_result(old.call_id).await.unwrap(), None);
        assert_eq!(s.get_result(new.call_id).await.unwrap(), Some(ok.clone()));
        let late = bulky_row(94, 2_000);
        s.queue_outcome(late.clone(), ok.clone(), later)
            .await
            .unwrap();
        s.flush().await.unwrap();
        assert_eq!(answers(s.clone()).await, [false, true, true]);
        assert_eq!(s.purge_results(10_000).await.unwrap(), 1);
        assert_eq!(answers(s.clone()).await, [false, false, true]);
        assert_eq!(s.purge_results(10_000).await.unwrap(), 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A segment another process's purge took while this one still had it open (it looked
    /// abandoned: open for over two hours) is not written to: the batch that would have
    /// fails on its row being gone, and its retry appends to a new segment.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_purged_under_its_writer_is_not_written_to() {
        let (dir, path) = store_path();
        let (a, b) = (
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        );
        let first = bulky_row(95, 1_000);
        a.record_call(&first).await.unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("UPDATE record_segments SET created_ms = 0", [])
            .unwrap();
        assert_eq!(b.purge_calls(5_000).await.unwrap(), 1);
        let second = bulky_row(95, 6_000);
        a.record_call(&second).await.unwrap();
        let q = CallQuery::bot(BotId(95), 0, i64::MAX, 10);
        assert_eq!(b.calls(&q).await.unwrap(), [second]);
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store that opens removes the files of segments without a row (left by a process
    /// stopped between a purge's commit and the files' removal), and only those.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_removes_files_of_forgotten_segments() {
        let (dir, path) = store_path();
        let s = SqliteStore::open(&path).unwrap();
        let row = bulky_row(96, 1_000);
        s.record_call(&row).await.unwrap();
        let record = record_log::dir_of(&path);
        let orphan = record.join("0000999999.log");
        std::fs::write(&orphan, b"left behind").unwrap();
        let again = SqliteStore::open(&path).unwrap();
        assert!(!orphan.exists());
        let q = CallQuery::bot(BotId(96), 0, i64::MAX, 10);
        assert_eq!(again.calls(&q).await.unwrap(), [row]);
        drop((s, again));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An entry of the log that is not what was written (damaged, or lost with an OS crash)
    /// leaves its row without its bulk: the row and the page read on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_log_entry_loses_the_bulk_not_the_row() {
        let (dir, path) = store_path();
        let s = SqliteStore::open(&path).unwrap();
        let written = [bulky_row(92, 1_000), bulky_row(92, 2_000)];
        for row in &written {
            s.record_call(row).await.unwrap();
        }
        let record = record_log::dir_of(&path);
        let segment = files_in(&record)
            .into_iter()
            .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        // Still JSON, another text: only the checksum can tell.
        let x = bytes.iter().position(|&b| b == b'x').unwrap();
        bytes[x] = b'y';
        std::fs::write(&segment, &bytes).unwrap();
        let rows = s
            .calls(&CallQuery::bot(BotId(92), 0, i64::MAX, 10))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].params.is_empty() && rows[0].request.is_none());
        assert_eq!(rows[1], written[1]);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two processes on one database (a split deployment on one host) append to segments of
    /// their own: each one's rows read back whole from either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_database_keep_their_own_segments() {
        let (dir, path) = store_path();
        let (a, b) = (
            SqliteStore::open(&path).unwrap(),
            SqliteStore::open(&path).unwrap(),
        );
        let mut written = Vec::new();
        for i in 0..20 {
            let row = bulky_row(93, 1_000 + i);
            let store = if i % 2 == 0 { &a } else { &b };
            store.record_call(&row).await.unwrap();
            written.push(row);
        }
        let q = CallQuery::bot(BotId(93), 0, i64::MAX, 100);
        assert_eq!(a.calls(&q).await.unwrap(), written);
        assert_eq!(b.calls(&q).await.unwrap(), written);
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ids_have_successors() {
        assert_eq!(successor([0; 16]).unwrap()[15], 1);
        let mut id = [0u8; 16];
        id[15] = 0xff;
        let next = successor(id).unwrap();
        assert_eq!((next[14], next[15]), (1, 0));
        assert_eq!(successor([0xff; 16]), None);
    }

    #[tokio::test]
    async fn passes_the_store_suite() {
        crate::testsuite::run_all(&SqliteStore::in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_remigrate() {
        let (dir, path) = store_path();
        let id = CallId::new();
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put_result(id, &crate::testsuite::ok_response(), i64::MAX)
                .await
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.get_result(id).await.unwrap().is_some());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Two processes on one database (a split deployment on one host): neither's writes fail
    /// because the other committed. A transaction that reads before it writes (`begin` looks
    /// for a result first) cannot take the write lock over a snapshot another writer has
    /// moved past, and SQLite then answers "database is locked" at once, without waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_file_both_get_through() {
        let (dir, path) = store_path();
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        let begins = async {
            for _ in 0..1_000 {
                a.begin(CallId::new(), i64::MAX).await?;
            }
            Ok::<_, StoreError>(())
        };
        let rows = async {
            for ms in 0..1_000 {
                let row = crate::testsuite::call_row(79, 1_000 + ms, "sendMessage");
                b.record_outcome(&row, &crate::testsuite::ok_response(), i64::MAX)
                    .await?;
            }
            Ok::<_, StoreError>(())
        };
        let (begun, recorded) = tokio::join!(begins, rows);
        begun.expect("every begin of the first store");
        recorded.expect("every outcome of the second store");
        drop((a, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stopping process flushes the store last: once `flush` returns, every row queued
    /// before it is in the file for another connection to read (a row still lingering in
    /// the writer's batch would die with the process).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_returns_once_every_queued_row_is_written() {
        let (dir, path) = store_path();
        let s = SqliteStore::open(&path).unwrap();
        let reader = SqliteStore::open(&path).unwrap();
        for round in 0..5i64 {
            for ms in 0..200 {
                let row = crate::testsuite::call_row(77, 1_000 + round * 1_000 + ms, "sendMessage");
                if ms % 2 == 0 {
                    s.queue_call(row).await.unwrap();
                } else {
                    let ok = crate::testsuite::ok_response();
                    s.queue_outcome(row, ok, i64::MAX).await.unwrap();
                }
            }
            s.flush().await.unwrap();
            // Read at once, no polling: the rows are there or the flush returned too early.
            let rows = reader.count_calls_before(i64::MAX).await.unwrap();
            assert_eq!(rows, 200 * (round as u64 + 1), "round {round}");
        }
        drop((s, reader));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Processes starting together on a new file: each opens it, the migrations run once
    /// (without the retries on a busy start, six at once over 20 files failed in every run).
    #[test]
    fn stores_opened_at_once_on_a_new_file_all_open() {
        for _ in 0..20 {
            let (dir, path) = store_path();
            let opened: Vec<_> = (0..6)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || SqliteStore::open(&path).map(drop))
                })
                .collect();
            for o in opened {
                o.join().unwrap().expect("a store opened beside others");
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A folder of its own and the database path in it (the WAL file goes beside it).
    fn store_path() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("telepipe-sqlite-{}", CallId::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        (dir, path)
    }

    /// Queued audit rows are bounded in bytes: with the writer held up, a caller queueing past
    /// the budget waits, and the rows go once the writer moves again (a row larger than the
    /// whole budget too), none lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_rows_wait_for_room_in_bytes() {
        let (dir, path) = store_path();
        let budget = 1024 * 1024;
        let options = SqliteOptions {
            queue_bytes: budget,
            ..SqliteOptions::default()
        };
        let s = SqliteStore::open_with(&path, options).unwrap();
        let row = |ms: i64, request: usize| {
            let mut r = crate::testsuite::call_row(78, ms, "sendMessage");
            r.request = Some("x".repeat(request));
            r
        };
        // Another connection holds the write lock: the writer cannot commit (for up to its
        // busy timeout of 5 s).
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let wait = std::time::Duration::from_millis(300);
        let mut queued = 0;
        for ms in 1..=20 {
            match tokio::time::timeout(wait, s.queue_call(row(1_000 + ms, 100_000))).await {
                Ok(r) => {
                    r.unwrap();
                    queued += 1;
                }
                Err(_) => break,
            }
        }
        // ~200 KB a row by the estimate (the request, and the parameters made of it): five
        // fit in 1 MiB.
        assert!(
            (4..=6).contains(&queued),
            "{queued} rows of ~200 KB were queued within {budget} bytes"
        );
        blocker.execute_batch("COMMIT").unwrap();
        for ms in 21..=30 {
            s.queue_call(row(1_000 + ms, 100_000)).await.unwrap();
            queued += 1;
        }
        // Larger than the budget: it waits for the queue to empty, then goes.
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.queue_call(row(2_000, 2 * budget)),
        )
        .await
        .expect("a row larger than the budget is queued once the queue is empty")
        .unwrap();
        queued += 1;
        let all = CallQuery::bot(BotId(78), 0, i64::MAX, 100);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let landed = s.calls(&all).await.unwrap().len();
            if landed == queued && s.room.available_permits() == budget {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{landed} of {queued} queued rows landed; room {} of {budget}",
                s.room.available_permits()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stream of records keeps the WAL file under its limit: the writer checkpoints and the
    /// file restarts, where without checkpoints it would hold everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_under_its_limit() {
        let (dir, path) = store_path();
        // The rows' bulk is in the record's logs: the database takes ~250 bytes a row.
        let limit = 512 * 1024;
        let s = SqliteStore::open_with(
            &path,
            SqliteOptions {
                wal_limit: limit,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let wal = dir.join("store.db-wal");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut largest = 0;
        let mut ms = 1_000;
        for _ in 0..60 {
            for _ in 0..250 {
                ms += 1;
                let row = crate::testsuite::call_row(77, ms, "sendMessage");
                s.queue_outcome(row, crate::testsuite::ok_response(), i64::MAX)
                    .await
                    .unwrap();
            }
            // Nobody waits for these rows (the writer's rare-checkpoint path): the last one
            // read back means every one is committed.
            let last = CallQuery::bot(BotId(77), ms, i64::MAX, 1);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while s.calls(&last).await.unwrap().is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a queued row never landed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            largest = largest.max(size(&wal));
        }
        let written = size(&path) + size(&wal);
        assert!(
            written > 4 * limit,
            "the test wrote too little to show a bound: {written} bytes"
        );
        assert!(largest > 0, "the WAL was never written");
        assert!(
            largest <= limit,
            "the WAL reached {largest} bytes, past its limit of {limit}"
        );
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Rows nobody waits for are checkpointed rarely (each checkpoint's syncs cost); commits
    /// somebody waits for, often (each checkpoint stalls them).
    #[test]
    fn the_checkpoint_threshold_follows_who_waits() {
        let c = Checkpoints::new(SqliteOptions::default());
        assert_eq!(c.threshold(false), 8192, "32 MiB of 4 KiB pages");
        assert_eq!(c.threshold(true), 1024, "4 MiB");
        assert_eq!(c.hard, 16384);
        let small = Checkpoints::new(SqliteOptions {
            wal_limit: 256 * 1024,
            ..SqliteOptions::default()
        });
        assert_eq!((small.threshold(false), small.threshold(true)), (32, 16));
        // A large limit does not make a checkpoint (a stall) as large: 32 MiB at most.
        let large = Checkpoints::new(SqliteOptions {
            wal_limit: 1024 * 1024 * 1024,
            ..SqliteOptions::default()
        });
        assert_eq!(
            (large.threshold(false), large.threshold(true)),
            (8192, 1024)
        );
    }

    /// Callers wait when a quarter of the jobs or more are waited for; a poller's write now
    /// and then among queued audit rows does not count, and an idle spell forgets them.
    #[test]
    fn callers_wait_when_many_jobs_are_waited_for() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let mut w = Waiting::default();
        assert!(!w.callers_wait(), "no jobs yet");
        for ms in 0..100 {
            w.note(0, 40, at(ms * 2));
        }
        w.note(1, 1, at(300));
        assert!(
            !w.callers_wait(),
            "one awaited write among 4,000 queued rows"
        );
        // A durable bus: every job waited for (within two windows, the queued rows before
        // it no longer count).
        for ms in 0..100 {
            w.note(10, 10, at(1_000 + ms * 20));
        }
        assert!(w.callers_wait(), "{:?} {:?}", w.before, w.now);
        // Back to queued rows only, for a whole window: the waiting is forgotten.
        for ms in 0..100 {
            w.note(0, 40, at(3_000 + ms * 10));
        }
        assert!(!w.callers_wait(), "{:?} {:?}", w.before, w.now);
        // After an idle spell, nothing carries over.
        let mut w = Waiting::default();
        w.note(5, 5, at(0));
        w.note(0, 1, at(10_000));
        assert!(!w.callers_wait());
    }

    /// Many concurrent writers all land, whatever batches the writer thread makes of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_outcomes_all_land() {
        let s = SqliteStore::in_memory().unwrap();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let row = crate::testsuite::call_row(77, 1000 + i, "getMe");
                s.record_outcome(&row, &crate::testsuite::ok_response(), i64::MAX)
                    .await
                    .unwrap();
                row.call_id
            }));
        }
        for t in tasks {
            let id = t.await.unwrap();
            assert!(s.get_result(id).await.unwrap().is_some());
        }
        let rows = s
            .calls(&CallQuery::bot(BotId(77), 0, i64::MAX, 1000))
            .await
            .unwrap();
        assert_eq!(rows.len(), 300);
    }
}
