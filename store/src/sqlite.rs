//! The SQLite store of embedded mode: one file, WAL journal, migrations applied on open.
//!
//! rusqlite is synchronous; every query runs on tokio's blocking pool behind one connection
//! mutex (SQLite serialises writers anyway).

use crate::{CallQuery, CallRow, Outcome, Store, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use schemas::{BotId, CallId, Response, Stages};
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_init.sql")];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

fn row_to_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<CallRow, StoreError>> {
    let call_id: String = r.get("call_id")?;
    let params: String = r.get("params")?;
    let blobs: String = r.get("blobs")?;
    let outcome: String = r.get("outcome")?;
    let build = || -> Result<CallRow, StoreError> {
        Ok(CallRow {
            call_id: call_id
                .parse::<CallId>()
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
        })
    };
    Ok(build())
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_call(&self, row: &CallRow) -> Result<(), StoreError> {
        let row = row.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO calls (bot_id, day, call_id, received_ms, token_fp, method,
                   http_method, test_env, params, blobs, outcome, http_status, error_code,
                   description, latency_ms, queue_ms, upstream_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    row.bot_id.0,
                    row.received_ms.div_euclid(86_400_000),
                    row.call_id.to_string(),
                    row.received_ms,
                    row.token_fingerprint,
                    row.method,
                    row.http_method,
                    row.test_env as i64,
                    json(&row.params),
                    json(&row.blobs),
                    row.outcome.as_str(),
                    row.http_status.map(|v| v as i64),
                    row.error_code,
                    row.description,
                    row.latency_ms.map(|v| v as i64),
                    row.stages.queue_ms as i64,
                    row.stages.upstream_ms as i64,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn calls(&self, q: &CallQuery) -> Result<Vec<CallRow>, StoreError> {
        let q = q.clone();
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM calls WHERE bot_id = ?1 AND received_ms >= ?2 AND received_ms < ?3
                 ORDER BY received_ms, call_id LIMIT ?4",
            )?;
            let rows = st.query_map(
                params![q.bot_id.0, q.from_ms, q.to_ms, q.limit as i64],
                row_to_call,
            )?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    async fn put_result(
        &self,
        call_id: CallId,
        response: &Response,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let body = json(response);
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO results (call_id, response, expires_ms) VALUES (?1, ?2, ?3)",
                params![call_id.to_string(), body, expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_result(&self, call_id: CallId) -> Result<Option<Response>, StoreError> {
        let now = schemas::now_ms();
        self.with(move |c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT response FROM results WHERE call_id = ?1 AND expires_ms > ?2",
                    params![call_id.to_string(), now],
                    |r| r.get(0),
                )
                .optional()?;
            body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError::Malformed(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn purge_results(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM results WHERE expires_ms <= ?1",
                params![now_ms],
            )? as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_suite() {
        crate::testsuite::run_all(&SqliteStore::in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_remigrate() {
        let dir = std::env::temp_dir().join(format!("telepipe-sqlite-{}", CallId::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
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
}
