//! What the record keeps, and for how long: audit rows (`--retain-calls`, default 30 days),
//! results — the answers' bodies, which also answer redeliveries — (`--retain-results`,
//! default 24 h), delivered updates (a week, against replayed bus records), stored files within
//! a per-bot quota (`--bot-quota`) and a global cap (`--blob-cap`), least recently served
//! first, and temporary blobs of transfers that broke off. `telepipe gc` runs one pass on
//! demand (`--dry-run` counts what it would forget); the server runs one a minute. Rows are
//! forgotten oldest first, by key range, a few thousand per transaction.

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;
use store::blobs::Blobs;
use store::{Store, StoreError, StoredFile};
use tokio_util::sync::CancellationToken;

pub static ROWS_EXPIRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_rows_expired_total",
        "Store rows forgotten by retention, by table (calls, results, updates). ScyllaDB \
         expires results and updates by TTL: those are not counted.",
        &["table"]
    )
    .expect("metric registers once")
});

/// How long attempts are kept at least.
pub const ATTEMPTS_KEPT: Duration = Duration::from_secs(86_400);

pub static FILES_EVICTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_files_evicted_total",
        "Stored files evicted (their next getFile fetches them again), by why: quota (a bot \
         past --bot-quota) or cap (all files past --blob-cap).",
        &["why"]
    )
    .expect("metric registers once")
});

pub static FILE_BYTES_STORED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "telepipe_stored_file_bytes",
        "Bytes of the files kept for bots (getFile, /storage/), after the last retention pass."
    )
    .expect("metric registers once")
});

pub static TEMP_BLOBS_COLLECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_temporary_blobs_collected_total",
        "Blobs deleted by retention (what: blobs, bytes: temporary blobs of transfers that \
         broke off; call_blobs, call_bytes: blobs only forgotten calls referenced).",
        &["what"]
    )
    .expect("metric registers once")
});

/// A file served this recently is never evicted: it may be on its way to a client now.
pub const SERVED_GRACE: Duration = Duration::from_secs(3600);

/// A temporary blob not written to for this long belongs to a transfer that broke off.
pub const TEMPORARY_AGE: Duration = Duration::from_secs(3600);

/// Most files one pass looks at for eviction (the next pass goes on).
const FILES_PER_PASS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub calls: Duration,
    pub results: Duration,
    /// Most bytes of stored files per bot.
    pub bot_quota: Option<u64>,
    /// Most bytes of stored files in all.
    pub blob_cap: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            calls: Duration::from_secs(30 * 86_400),
            results: Duration::from_secs(86_400),
            bot_quota: None,
            blob_cap: None,
        }
    }
}

/// What one pass forgot (or, dry, would forget).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Pass {
    pub calls: u64,
    pub results: u64,
    pub updates: u64,
    /// Bytes of stored files before the pass.
    pub file_bytes: u64,
    pub files_evicted: u64,
    pub bytes_evicted: u64,
    pub temporary_blobs: u64,
    pub temporary_bytes: u64,
    /// Blobs of forgotten calls (upload parts no stored file uses).
    pub call_blobs: u64,
    pub call_blob_bytes: u64,
    pub dry_run: bool,
}

impl std::fmt::Display for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            write!(
                f,
                "would forget {} audit rows (results and delivered updates are dropped by age; \
                 not counted in a dry run)",
                self.calls
            )?;
        } else {
            write!(
                f,
                "forgot {} audit rows, {} results, {} delivered updates",
                self.calls, self.results, self.updates
            )?;
        }
        write!(
            f,
            "; stored files: {} bytes, {} {} ({} bytes); temporary blobs of broken transfers: {} \
             ({} bytes) {}; blobs of forgotten calls: {} ({} bytes)",
            self.file_bytes,
            self.files_evicted,
            if self.dry_run {
                "would be evicted"
            } else {
                "evicted"
            },
            self.bytes_evicted,
            self.temporary_blobs,
            self.temporary_bytes,
            if self.dry_run {
                "to collect"
            } else {
                "collected"
            },
            self.call_blobs,
            self.call_blob_bytes,
        )
    }
}

fn cut(now_ms: i64, keep: Duration) -> i64 {
    now_ms.saturating_sub(keep.as_millis().min(i64::MAX as u128) as i64)
}

/// One pass at `now_ms`. `updates`: whether delivered updates are purged and the blobs of
/// forgotten calls collected too (the server does that every tenth pass: it lists every blob).
pub async fn pass(
    store: &dyn Store,
    blobs: &dyn Blobs,
    keep: Retention,
    now_ms: i64,
    dry_run: bool,
    updates: bool,
) -> Result<Pass, StoreError> {
    let mut p = Pass {
        dry_run,
        ..Pass::default()
    };
    files(store, blobs, keep, now_ms, &mut p).await?;
    let before = std::time::SystemTime::now() - TEMPORARY_AGE;
    match blobs.collect_temporary(before, dry_run).await {
        Ok((n, bytes)) => (p.temporary_blobs, p.temporary_bytes) = (n, bytes),
        Err(error) => tracing::warn!(%error, "collecting temporary blobs failed"),
    }
    if updates {
        call_blobs(store, blobs, keep, now_ms, dry_run, &mut p).await?;
    }
    if dry_run {
        p.calls = store.count_calls_before(cut(now_ms, keep.calls)).await?;
        return Ok(p);
    }
    TEMP_BLOBS_COLLECTED
        .with_label_values(&["call_blobs"])
        .inc_by(p.call_blobs);
    TEMP_BLOBS_COLLECTED
        .with_label_values(&["call_bytes"])
        .inc_by(p.call_blob_bytes);
    TEMP_BLOBS_COLLECTED
        .with_label_values(&["blobs"])
        .inc_by(p.temporary_blobs);
    TEMP_BLOBS_COLLECTED
        .with_label_values(&["bytes"])
        .inc_by(p.temporary_bytes);
    // Attempts guard a durable bus's redeliveries: a day at least, whatever results are kept
    // (without its attempt a redelivered call would look new and run twice).
    store
        .purge_attempts(cut(now_ms, keep.results.max(ATTEMPTS_KEPT)))
        .await?;
    p.results = store.purge_results(cut(now_ms, keep.results)).await?;
    p.calls = store.purge_calls(cut(now_ms, keep.calls)).await?;
    if updates {
        p.updates = store
            .purge_updates(now_ms - store::DELIVERED_UPDATES_KEPT_MS)
            .await?;
    }
    for (table, n) in [
        ("calls", p.calls),
        ("results", p.results),
        ("updates", p.updates),
    ] {
        ROWS_EXPIRED.with_label_values(&[table]).inc_by(n);
    }
    Ok(p)
}

/// Deletes the blobs only forgotten calls referenced: last written before the calls' cut (a
/// blob stored again is renewed) and used by no stored file.
async fn call_blobs(
    store: &dyn Store,
    blobs: &dyn Blobs,
    keep: Retention,
    now_ms: i64,
    dry_run: bool,
    p: &mut Pass,
) -> Result<(), StoreError> {
    let cut_ms = cut(now_ms, keep.calls).max(0) as u64;
    let before = std::time::UNIX_EPOCH + Duration::from_millis(cut_ms);
    let in_use: HashSet<String> = store
        .files_least_served(None, usize::MAX)
        .await?
        .into_iter()
        .map(|f| f.row.blob.key)
        .collect();
    match blobs.collect_written_before(before, &in_use, dry_run).await {
        Ok((n, bytes)) => (p.call_blobs, p.call_blob_bytes) = (n, bytes),
        Err(error) => tracing::warn!(%error, "collecting the blobs of forgotten calls failed"),
    }
    Ok(())
}

/// Evicts stored files past the quota and the cap, least recently served first; never one
/// served within [`SERVED_GRACE`]. A blob goes with its last file (content addressing shares
/// one blob between bots' identical files).
async fn files(
    store: &dyn Store,
    blobs: &dyn Blobs,
    keep: Retention,
    now_ms: i64,
    p: &mut Pass,
) -> Result<(), StoreError> {
    if keep.bot_quota.is_none() && keep.blob_cap.is_none() {
        return Ok(());
    }
    let usage = store.file_usage().await?;
    p.file_bytes = usage.iter().map(|u| u.2).sum();
    FILE_BYTES_STORED.set(p.file_bytes.min(i64::MAX as u64) as i64);
    let fresh = now_ms - SERVED_GRACE.as_millis() as i64;
    let mut gone = HashSet::new();
    let mut total = p.file_bytes;
    if let Some(quota) = keep.bot_quota {
        for (bot, _, bytes) in usage.iter().filter(|u| u.2 > quota) {
            let mut over = bytes - quota;
            for f in store.files_least_served(Some(*bot), FILES_PER_PASS).await? {
                if over == 0 || f.served_ms > fresh {
                    break;
                }
                over = over.saturating_sub(f.row.blob.size);
                total = total.saturating_sub(f.row.blob.size);
                evict(store, blobs, &f, "quota", p).await?;
                gone.insert((f.row.bot_id, f.row.file_unique_id));
            }
        }
    }
    if let Some(cap) = keep.blob_cap.filter(|cap| total > *cap) {
        let mut over = total - cap;
        for f in store.files_least_served(None, FILES_PER_PASS).await? {
            if over == 0 || f.served_ms > fresh {
                break;
            }
            if gone.contains(&(f.row.bot_id, f.row.file_unique_id.clone())) {
                continue;
            }
            over = over.saturating_sub(f.row.blob.size);
            evict(store, blobs, &f, "cap", p).await?;
        }
    }
    Ok(())
}

async fn evict(
    store: &dyn Store,
    blobs: &dyn Blobs,
    f: &StoredFile,
    why: &str,
    p: &mut Pass,
) -> Result<(), StoreError> {
    p.files_evicted += 1;
    p.bytes_evicted += f.row.blob.size;
    if p.dry_run {
        return Ok(());
    }
    // The row first: from then on nobody finds the file, and the next getFile fetches it again.
    store
        .forget_file(f.row.bot_id, &f.row.file_unique_id)
        .await?;
    FILES_EVICTED.with_label_values(&[why]).inc();
    if !store.blob_in_use(&f.row.blob.key).await? {
        if let Err(error) = blobs.remove(&f.row.blob).await {
            tracing::warn!(%error, "an evicted file's blob could not be removed");
        }
    }
    Ok(())
}

/// The server's retention: a pass a minute (so each is a few short transactions rather than
/// a long one), delivered updates every tenth, until `stop`.
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    blobs: std::sync::Arc<dyn Blobs>,
    keep: Retention,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let now = schemas::now_ms();
                match pass(store.as_ref(), blobs.as_ref(), keep, now, false, round % 10 == 0).await {
                    Ok(p) if p.calls + p.results + p.updates + p.files_evicted > 0 => {
                        tracing::debug!(calls = p.calls, results = p.results, updates = p.updates, "retention pass");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "retention pass failed"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{CallQuery, CallStore, FileStore, OutcomeStore};

    /// Audit rows and results older than their retention go; younger ones stay.
    #[tokio::test]
    async fn a_pass_forgets_what_is_older_than_kept() {
        let store = store::sqlite::SqliteStore::in_memory().unwrap();
        let now = 100 * 86_400_000;
        let keep = Retention {
            calls: Duration::from_secs(10 * 86_400),
            results: Duration::from_secs(86_400),
            ..Retention::default()
        };
        let dir = std::env::temp_dir().join(format!("tp-ret-{:x}", rand_id()));
        let blobs = store::blobs::LocalBlobs::open(&dir).unwrap();
        let old = store::testsuite::call_row(1, now - 11 * 86_400_000, "sendMessage");
        let mid = store::testsuite::call_row(1, now - 2 * 86_400_000, "sendMessage");
        let new = store::testsuite::call_row(1, now - 1000, "sendMessage");
        let far = i64::MAX / 2;
        for r in [&old, &mid, &new] {
            store
                .record_outcome(r, &store::testsuite::ok_response(), far)
                .await
                .unwrap();
        }
        let dry = pass(&store, &blobs, keep, now, true, false).await.unwrap();
        assert_eq!((dry.calls, dry.dry_run), (1, true));
        let p = pass(&store, &blobs, keep, now, false, true).await.unwrap();
        assert_eq!((p.calls, p.results), (1, 2));
        let rows = store.calls(&CallQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].call_id, mid.call_id);
        assert_eq!(rows[0].answer, None, "its result is past --retain-results");
        assert!(rows[1].answer.is_some());
        std::fs::remove_dir_all(dir).ok();
    }

    fn rand_id() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    async fn stored(
        store: &dyn Store,
        blobs: &dyn Blobs,
        bot: i64,
        name: &str,
        bytes: usize,
        served_ms: i64,
    ) -> store::FileRow {
        let blob = blobs
            .put_bytes(
                bytes::Bytes::from(format!("{name}{}", "x".repeat(bytes - name.len()))),
                u64::MAX,
            )
            .await
            .unwrap();
        let mut row = store::testsuite::file_row(bot, name, &format!("b{bot}_bot/{name}"));
        row.blob = blob;
        row.stored_ms = served_ms;
        store.put_file(&row).await.unwrap();
        row
    }

    /// Blobs only forgotten calls referenced go on the slow pass (every tenth, and `gc`); a
    /// stored file's blob stays.
    #[tokio::test]
    async fn blobs_of_forgotten_calls_are_collected() {
        let store = store::sqlite::SqliteStore::in_memory().unwrap();
        let dir = std::env::temp_dir().join(format!("tp-callblobs-{:x}", rand_id()));
        let blobs = store::blobs::LocalBlobs::open(&dir).unwrap();
        let upload = blobs
            .put_bytes(
                bytes::Bytes::from_static(b"an upload's file part"),
                u64::MAX,
            )
            .await
            .unwrap();
        let file = stored(&store, &blobs, 1, "kept", 10, 0).await;
        // Both blobs were written before the cut (a second of calls kept, a minute on).
        let keep = Retention {
            calls: Duration::from_secs(1),
            ..Retention::default()
        };
        let now = schemas::now_ms() + 60_000;
        let fast = pass(&store, &blobs, keep, now, false, false).await.unwrap();
        assert_eq!(fast.call_blobs, 0, "not on every pass");
        let dry = pass(&store, &blobs, keep, now, true, true).await.unwrap();
        assert_eq!((dry.call_blobs, dry.call_blob_bytes), (1, upload.size));
        let p = pass(&store, &blobs, keep, now, false, true).await.unwrap();
        assert_eq!(p.call_blobs, 1);
        assert!(
            blobs.open(&upload).await.is_err(),
            "the upload's blob is gone"
        );
        assert!(
            blobs.open(&file.blob).await.is_ok(),
            "the stored file's stays"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Quota per bot, then the global cap, least recently served first; a file served within
    /// the grace period stays; a blob shared with another bot's file stays until its last file
    /// goes; temporary blobs of broken transfers go once old.
    #[tokio::test]
    async fn files_are_evicted_least_recently_served_first() {
        let store = store::sqlite::SqliteStore::in_memory().unwrap();
        let dir = std::env::temp_dir().join(format!("tp-evict-{:x}", rand_id()));
        let blobs = store::blobs::LocalBlobs::open(&dir).unwrap();
        let now = 1_000_000_000_000;
        let hour = 3_600_000;
        // Bot 1: 300 bytes in three files; bot 2: 200 bytes, one a copy of bot 1's newest.
        let a = stored(&store, &blobs, 1, "a", 100, now - 5 * hour).await;
        let b = stored(&store, &blobs, 1, "b", 100, now - 4 * hour).await;
        let c = stored(&store, &blobs, 1, "c", 100, now - 10).await;
        let d = stored(&store, &blobs, 2, "d", 100, now - 3 * hour).await;
        let mut shared = store::testsuite::file_row(2, "c2", "b2_bot/c2");
        shared.blob = c.blob.clone();
        shared.stored_ms = now - 2 * hour;
        store.put_file(&shared).await.unwrap();
        let keep = Retention {
            bot_quota: Some(150),
            blob_cap: Some(150),
            ..Retention::default()
        };
        let dry = pass(&store, &blobs, keep, now, true, false).await.unwrap();
        // Quota: bot 1 loses a (then 200 > 150: b too); bot 2 loses d. Cap: 100 left + c2 (its
        // blob is c's) = 200 > 150: c2 goes (c was served within the hour).
        assert_eq!((dry.file_bytes, dry.files_evicted), (500, 4));
        assert_eq!(
            store.file_usage().await.unwrap().len(),
            2,
            "a dry run evicts nothing"
        );
        let p = pass(&store, &blobs, keep, now, false, false).await.unwrap();
        assert_eq!((p.files_evicted, p.bytes_evicted), (4, 400));
        let left = store.files_least_served(None, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].row.file_unique_id, "c");
        for gone in [&a, &b, &d] {
            assert!(
                blobs.open(&gone.blob).await.is_err(),
                "{}",
                gone.file_unique_id
            );
        }
        assert!(blobs.open(&c.blob).await.is_ok(), "c's blob stays with c");
        // A broken transfer's leftover.
        std::fs::write(dir.join("tmp").join("broken"), b"half").unwrap();
        let later = pass(&store, &blobs, Retention::default(), now, true, false)
            .await
            .unwrap();
        assert_eq!(later.temporary_blobs, 0, "written just now: not yet");
        std::fs::remove_dir_all(dir).ok();
    }
}
