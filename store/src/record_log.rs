//! The record's bulk, appended to files of its own: each audit row's parameters, blobs and
//! sealed request (the `calls` log) and each answer kept for the audit (the `answers` log).
//! The `calls` table keeps a row's small, searched columns and where its bulk and answer lie
//! (`bulk_seg`/`_off`/`_len`, `answer_...`); every query, filter, page and purge still runs in
//! SQL.
//!
//! Why: an SQLite insert of ~1.2 KB a call (the row and its result) cost the writer thread
//! 12-15 us a call under load, most of it page writes (each 4 KiB page written to the WAL as a
//! frame of two `pwrite`s, then copied back by a checkpoint's `pread` and `pwrite`). A batch
//! of bulk is one `write` here, whatever its size.
//!
//! A segment is one file, `<id>.log`, appended by the one writer thread that created it (its
//! id comes from an AUTOINCREMENT row of `record_segments`, committed before the file is made,
//! so the processes of a split deployment on one database never share one). Its row holds
//! the newest call id appended, so retention drops whole files: a segment is removed once it is
//! closed (or too old to be appended to: [`MAX_AGE`]) and its newest call is past retention.
//!
//! Each entry is framed `[u32 length][u32 crc32][payload]` (little-endian): a row whose bulk was
//! lost with an OS crash (the files, like the WAL's commits, are not synced) or damaged is read
//! without it, never as something else.

use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A segment is closed once it holds `SqliteOptions::segment_bytes`, or was opened this long
/// ago: a quiet gateway's segment still ends within the hour, so retention can drop it.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);
/// An unclosed segment this old is nobody's to append to (a process that died, or one past
/// [`MAX_AGE`] which closes it at its next batch): retention may drop it.
const ABANDONED_MS: i64 = 2 * 3600 * 1000;

const FRAME: usize = 8;

/// The most a log's buffer keeps allocated between batches.
const BUF_KEPT: usize = 1024 * 1024;

/// Which of the two logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Log {
    Calls = 0,
    Answers = 1,
}

/// Where an entry lies: its segment, the offset of its frame, the payload's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ptr {
    pub segment: i64,
    pub offset: i64,
    pub len: i64,
}

/// An error of the log's files, carried through rusqlite's error so a batch's writes fail and
/// roll back together.
fn io_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The directory of a database's logs: beside it, named after it.
pub(crate) fn dir_of(db: &Path) -> PathBuf {
    let mut p = db.to_owned().into_os_string();
    p.push("-record");
    PathBuf::from(p)
}

fn file_of(dir: &Path, segment: i64) -> PathBuf {
    dir.join(format!("{segment:010}.log"))
}

struct Open {
    segment: i64,
    file: File,
    /// The file's length once the buffer is written: where the next entry goes.
    len: u64,
    opened: Instant,
}

struct Appender {
    log: Log,
    max_bytes: u64,
    /// Closed at the next batch whatever its size (a purge of answers: what is written after
    /// it must not be in a segment it covered).
    retire: bool,
    open: Option<Open>,
    buf: Vec<u8>,
    newest: Option<[u8; 16]>,
}

impl Appender {
    fn new(log: Log, max_bytes: u64) -> Self {
        Self {
            log,
            max_bytes,
            retire: false,
            open: None,
            buf: Vec::new(),
            newest: None,
        }
    }

    /// Whether the open segment must be closed before a batch appends to it: full, old, or
    /// retired.
    fn spent(&self) -> bool {
        let Some(open) = &self.open else {
            return true;
        };
        self.retire || open.len >= self.max_bytes || open.opened.elapsed() >= MAX_AGE
    }

    /// Closes the spent segment and opens a new one, in a transaction of its own: a
    /// segment's id must be committed before anything is written to it.
    fn rotate(&mut self, conn: &Connection, dir: &Path) -> rusqlite::Result<()> {
        let tx = crate::sqlite::write_transaction(conn)?;
        if let Some(old) = &self.open {
            tx.execute(
                "UPDATE record_segments SET closed = 1 WHERE segment = ?1",
                params![old.segment],
            )?;
        }
        tx.execute(
            "INSERT INTO record_segments (log, created_ms) VALUES (?1, ?2)",
            params![self.log as i64, schemas::now_ms()],
        )?;
        let segment = tx.last_insert_rowid();
        tx.commit()?;
        self.open = None;
        self.retire = false;
        // Made again if it went (the folder is the store's: a host's cleanup may take it).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file_of(dir, segment))
            .map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        self.open = Some(Open {
            segment,
            file,
            len,
            opened: Instant::now(),
        });
        Ok(())
    }

    fn push(&mut self, call_id: &[u8; 16], payload: &[u8]) -> rusqlite::Result<Ptr> {
        let Some(open) = &self.open else {
            return Err(io_error(std::io::Error::other("no open log segment")));
        };
        let len = u32::try_from(payload.len())
            .map_err(|_| io_error(std::io::Error::other("a log entry over 4 GiB")))?;
        let ptr = Ptr {
            segment: open.segment,
            offset: (open.len + self.buf.len() as u64) as i64,
            len: len as i64,
        };
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        if self.newest.is_none_or(|n| n < *call_id) {
            self.newest = Some(*call_id);
        }
        Ok(ptr)
    }

    /// Writes the buffer to the segment and notes its newest call, in the batch's
    /// transaction (both or neither: a write that fails fails the batch).
    fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        let Some(newest) = self.newest.take() else {
            return Ok(());
        };
        // First, under the write lock the batch holds: a purge (this process's or another's,
        // `telepipe gc`) that took the segment took its row first. Its file is gone or going:
        // the batch fails, and its retry appends to a new segment.
        let noted = tx
            .prepare_cached(
                "UPDATE record_segments SET newest = max(coalesce(newest, x''), ?1)
                 WHERE segment = ?2",
            )?
            .execute(params![newest, open.segment])?;
        let written = if noted == 1 {
            open.file.write_all(&self.buf)
        } else {
            Err(std::io::Error::other("the log segment was purged"))
        };
        let n = self.buf.len() as u64;
        self.buf.clear();
        // A batch's buffer may be large; what stays allocated is bounded.
        self.buf.shrink_to(BUF_KEPT);
        if let Err(e) = written {
            // Part of it may be written, and where the file ends is then unsure: the next
            // batch begins a new segment.
            self.retire = true;
            return Err(io_error(e));
        }
        open.len += n;
        Ok(())
    }

    fn discard(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(BUF_KEPT);
        self.newest = None;
    }
}

/// The writer thread's side: the two logs it appends to, and the segments a purge removed
/// from the table, whose files go once that is committed.
pub(crate) struct Logs {
    dir: PathBuf,
    calls: Appender,
    answers: Appender,
    doomed: Vec<i64>,
}

impl Logs {
    /// The logs of the database `conn` writes to, in `dir`. Files of segments whose rows are
    /// gone (a process that stopped between a purge's commit and its removal of the files)
    /// are removed: a segment's row is committed before its file is made, so a file without
    /// one is nobody's.
    pub(crate) fn open(
        dir: PathBuf,
        segment_bytes: u64,
        conn: &Connection,
    ) -> rusqlite::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error)?;
        // The folder first, the rows after: another process may be making a segment now, and
        // a file listed had its row committed before it was made, so the rows read after
        // the listing have it.
        let files: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io_error)?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let segment = name.to_str()?.strip_suffix(".log")?.parse::<i64>().ok()?;
                Some((segment, entry.path()))
            })
            .collect();
        let known: std::collections::HashSet<i64> = conn
            .prepare("SELECT segment FROM record_segments")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (segment, path) in files {
            if !known.contains(&segment) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(Self {
            dir,
            calls: Appender::new(Log::Calls, segment_bytes.max(1)),
            answers: Appender::new(Log::Answers, segment_bytes.max(1)),
            doomed: Vec::new(),
        })
    }

    fn appender(&mut self, log: Log) -> &mut Appender {
        match log {
            Log::Calls => &mut self.calls,
            Log::Answers => &mut self.answers,
        }
    }

    /// Before a batch that appends to `logs`: each has a segment to append to. (A batch
    /// without audit rows touches no log: a broken log folder fails the record, not a
    /// webhook's offset or an attempt.)
    pub(crate) fn prepare(&mut self, conn: &Connection, logs: &[Log]) -> rusqlite::Result<()> {
        for &log in logs {
            let dir = self.dir.clone();
            let a = self.appender(log);
            if a.spent() {
                a.rotate(conn, &dir)?;
            }
        }
        Ok(())
    }

    pub(crate) fn push(
        &mut self,
        log: Log,
        call_id: &[u8; 16],
        payload: &[u8],
    ) -> rusqlite::Result<Ptr> {
        self.appender(log).push(call_id, payload)
    }

    /// Before the batch's commit.
    pub(crate) fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        let calls = self.calls.flush(tx);
        let answers = self.answers.flush(tx);
        calls.and(answers)
    }

    /// The batch failed: what it appended is forgotten (and what it doomed kept).
    pub(crate) fn discard(&mut self) {
        self.calls.discard();
        self.answers.discard();
        self.doomed.clear();
    }

    /// Forgets the segments of `log` whose every call is before `before` and which nobody
    /// appends to any more; their files are removed by [`Logs::remove_doomed`] after the
    /// commit. Returns how many.
    pub(crate) fn purge(
        &mut self,
        tx: &Connection,
        log: Log,
        before: &[u8; 16],
    ) -> rusqlite::Result<u64> {
        let mine: Vec<i64> = [&self.calls, &self.answers]
            .iter()
            .filter_map(|a| a.open.as_ref().map(|o| o.segment))
            .collect();
        let abandoned = schemas::now_ms() - ABANDONED_MS;
        let mut st = tx.prepare_cached(
            "SELECT segment FROM record_segments
             WHERE log = ?1 AND (closed = 1 OR created_ms < ?2)
               AND (newest IS NULL OR newest < ?3)",
        )?;
        let gone: Vec<i64> = st
            .query_map(params![log as i64, abandoned, before], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut n = 0;
        for segment in gone.into_iter().filter(|s| !mine.contains(s)) {
            tx.prepare_cached("DELETE FROM record_segments WHERE segment = ?1")?
                .execute(params![segment])?;
            self.doomed.push(segment);
            n += 1;
        }
        Ok(n)
    }

    /// Forgets the answers of calls before `before` written so far: those in the segments
    /// that exist now (every process's). This process's answers go to a new segment from its
    /// next batch that has any; another's still open may take a few more of calls before
    /// `before` (calls that began before the cut and ended after it), which are forgotten
    /// too. Returns how many answers it forgot that an earlier cut had not.
    pub(crate) fn forget_answers(
        &mut self,
        tx: &Connection,
        before: &[u8; 16],
    ) -> rusqlite::Result<u64> {
        let last: i64 = tx.query_row(
            "SELECT coalesce(max(segment), 0) FROM record_segments",
            [],
            |r| r.get(0),
        )?;
        let (was, was_last): (Vec<u8>, i64) = tx.query_row(
            "SELECT answers_before, answers_seg FROM record_state WHERE id = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        // The calls between the two cuts (a minute's, run by run), and those below the old
        // one whose answers were written after it.
        let forgot: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM calls WHERE call_id < ?1 AND answer_seg IS NOT NULL
                   AND answer_seg <= ?2 AND (call_id >= ?3 OR answer_seg > ?4)",
            )?
            .query_row(params![before, last, was, was_last], |r| r.get(0))?;
        self.answers.retire = self.answers.open.is_some();
        tx.prepare_cached(
            "UPDATE record_state SET answers_before = max(answers_before, ?1),
               answers_seg = max(answers_seg, ?2) WHERE id = 0",
        )?
        .execute(params![before, last])?;
        Ok(forgot.max(0) as u64)
    }

    /// After a commit: the files of the segments it forgot.
    pub(crate) fn remove_doomed(&mut self) {
        for segment in self.doomed.drain(..) {
            match std::fs::remove_file(file_of(&self.dir, segment)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(%error, segment, "could not remove a log segment"),
            }
        }
    }

    /// As the writer stops: its segments are closed, so retention may drop them once their
    /// calls are past it (not two hours later).
    pub(crate) fn close(&mut self, conn: &Connection) {
        for a in [&mut self.calls, &mut self.answers] {
            if let Some(open) = a.open.take() {
                let closed = conn.execute(
                    "UPDATE record_segments SET closed = 1 WHERE segment = ?1",
                    params![open.segment],
                );
                if let Err(error) = closed {
                    tracing::warn!(%error, "could not close a log segment");
                }
            }
        }
    }
}

/// What a reader keeps of a segment: the file, and the window of it read last.
struct Seg {
    file: File,
    start: u64,
    window: Vec<u8>,
}

/// Bytes read from a segment at once: the entries of a page of audit rows lie mostly in the
/// order of their calls, so one read serves the rows after it too (a full listing read each
/// row's bulk and answer with a `pread` of their own: 45.7k rows a second against 63.5k
/// before the logs). A row far from the last costs a window of copying, not a system call
/// more.
const WINDOW: u64 = 64 * 1024;

/// The most segments a reader keeps open (a listing of a month reads thousands).
const SEGS_KEPT: usize = 8;

/// Reads entries, keeping the segments it read open, with the window of each read last.
pub(crate) struct Reader<'a> {
    dir: &'a Path,
    segs: HashMap<i64, Option<Seg>>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            segs: HashMap::new(),
        }
    }

    /// The entry at `ptr`; `None` (logged) when its segment is gone or the entry is not what
    /// was written there.
    pub(crate) fn read(&mut self, ptr: Ptr) -> Option<Vec<u8>> {
        let entry = self.frame(ptr).and_then(|frame| {
            let len = frame.len() - FRAME;
            let intact = frame[..4] == (len as u32).to_le_bytes()
                && frame[4..8] == crc32fast::hash(&frame[FRAME..]).to_le_bytes();
            intact.then(|| frame[FRAME..].to_vec())
        });
        if entry.is_none() {
            tracing::warn!(
                segment = ptr.segment,
                offset = ptr.offset,
                "a record log entry is missing or damaged"
            );
        }
        entry
    }

    /// The frame's bytes where `ptr` says it is, if the segment has them.
    fn frame(&mut self, ptr: Ptr) -> Option<&[u8]> {
        use std::os::unix::fs::FileExt;
        let (Ok(offset), Ok(len)) = (u64::try_from(ptr.offset), u32::try_from(ptr.len)) else {
            return None;
        };
        let end = offset.checked_add(FRAME as u64 + u64::from(len))?;
        if self.segs.len() >= SEGS_KEPT && !self.segs.contains_key(&ptr.segment) {
            self.segs.clear();
        }
        let seg = self
            .segs
            .entry(ptr.segment)
            .or_insert_with(|| {
                File::open(file_of(self.dir, ptr.segment))
                    .ok()
                    .map(|file| Seg {
                        file,
                        start: 0,
                        window: Vec::new(),
                    })
            })
            .as_mut()?;
        let held = offset >= seg.start && end <= seg.start + seg.window.len() as u64;
        if !held {
            // The pointer is the database's word, checked against the file before anything
            // is allocated for it.
            let size = seg.file.metadata().ok()?.len();
            if end > size {
                return None;
            }
            let want = (end - offset).max(WINDOW).min(size - offset);
            seg.window.resize(want as usize, 0);
            seg.start = offset;
            if seg.file.read_exact_at(&mut seg.window, offset).is_err() {
                seg.window.clear();
                return None;
            }
        }
        let at = (offset - seg.start) as usize;
        Some(&seg.window[at..at + (end - offset) as usize])
    }
}

/// The pointer in columns `<prefix>_seg`, `<prefix>_off`, `<prefix>_len` of a row, if set.
pub(crate) fn ptr_of(r: &rusqlite::Row<'_>, prefix: &str) -> rusqlite::Result<Option<Ptr>> {
    let get = |what: &str| r.get::<_, Option<i64>>(format!("{prefix}_{what}").as_str());
    Ok(match (get("seg")?, get("off")?, get("len")?) {
        (Some(segment), Some(offset), Some(len)) => Some(Ptr {
            segment,
            offset,
            len,
        }),
        _ => None,
    })
}
