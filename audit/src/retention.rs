//! What the record keeps, and for how long: audit rows (`--retain-calls`, default 30 days),
//! results — the answers' bodies, which also answer redeliveries — (`--retain-results`,
//! default 24 h), delivered updates (a week, against replayed bus records). `telepipe gc`
//! runs one pass on demand (`--dry-run` counts what it would forget); the server runs one a
//! minute. Rows are forgotten oldest first, by key range, a few thousand per transaction.

use prometheus::{register_int_counter_vec, IntCounterVec};
use std::sync::LazyLock;
use std::time::Duration;
use store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

pub static ROWS_EXPIRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_rows_expired_total",
        "Store rows forgotten by retention, by table (calls, results, updates). ScyllaDB \
         expires results and updates by TTL and drops whole days of calls: not counted.",
        &["table"]
    )
    .expect("metric registers once")
});

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub calls: Duration,
    pub results: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            calls: Duration::from_secs(30 * 86_400),
            results: Duration::from_secs(86_400),
        }
    }
}

/// What one pass forgot (or, dry, would forget).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Pass {
    pub calls: u64,
    pub results: u64,
    pub updates: u64,
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
            )
        } else {
            write!(
                f,
                "forgot {} audit rows, {} results, {} delivered updates",
                self.calls, self.results, self.updates
            )
        }
    }
}

fn cut(now_ms: i64, keep: Duration) -> i64 {
    now_ms.saturating_sub(keep.as_millis().min(i64::MAX as u128) as i64)
}

/// One pass at `now_ms`. `updates`: whether delivered updates are purged too (the server does
/// that every tenth pass).
pub async fn pass(
    store: &dyn Store,
    keep: Retention,
    now_ms: i64,
    dry_run: bool,
    updates: bool,
) -> Result<Pass, StoreError> {
    if dry_run {
        return Ok(Pass {
            calls: store.count_calls_before(cut(now_ms, keep.calls)).await?,
            dry_run: true,
            ..Pass::default()
        });
    }
    let mut p = Pass {
        results: store.purge_results(cut(now_ms, keep.results)).await?,
        calls: store.purge_calls(cut(now_ms, keep.calls)).await?,
        ..Pass::default()
    };
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

/// The server's retention: a pass a minute (so each is a few short transactions rather than
/// a long one), delivered updates every tenth, until `stop`.
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    keep: Retention,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    for round in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                match pass(store.as_ref(), keep, schemas::now_ms(), false, round % 10 == 0).await {
                    Ok(p) if p.calls + p.results + p.updates > 0 => {
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
    use store::CallQuery;

    /// Audit rows and results older than their retention go; younger ones stay.
    #[tokio::test]
    async fn a_pass_forgets_what_is_older_than_kept() {
        let store = store::sqlite::SqliteStore::in_memory().unwrap();
        let now = 100 * 86_400_000;
        let keep = Retention {
            calls: Duration::from_secs(10 * 86_400),
            results: Duration::from_secs(86_400),
        };
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
        let dry = pass(&store, keep, now, true, false).await.unwrap();
        assert_eq!((dry.calls, dry.dry_run), (1, true));
        let p = pass(&store, keep, now, false, true).await.unwrap();
        assert_eq!((p.calls, p.results), (1, 2));
        let rows = store.calls(&CallQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].call_id, mid.call_id);
        assert_eq!(rows[0].answer, None, "its result is past --retain-results");
        assert!(rows[1].answer.is_some());
    }
}
