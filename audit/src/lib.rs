//! Reading the record: what `telepipe audit`, `telepipe replay` and `telepipe gc` do.
//!
//! Every call a bot makes is an audit row in the store (`store::CallRow`): method, encoding,
//! redacted parameters, status, latency, the answer's digest (and body while results are
//! kept), and the request as sent, sealed for the bot under the cluster key. This crate reads
//! those rows through [`store::Store::calls`] a page at a time, so a record of millions of
//! calls is listed, counted and replayed in constant memory.
//!
//! # Layout
//! - [`Selection`] (this file): the filters every command shares, and the paging walk.
//! - [`show`]: the readable table and JSON lines.
//! - [`stats`]: counts, error rates and latency percentiles per method or bot.
//! - [`replay`]: sending the selected calls again to another Bot API, and the report.
//! - [`compare`]: what makes a replayed answer the same as the recorded one.
//! - [`retention`]: what `gc` forgets, and the server's periodic pass.

pub mod compare;
pub mod replay;
pub mod retention;
pub mod show;
pub mod stats;

use schemas::{BotId, CallId};
use std::time::Duration;
use store::{BotStore, CallQuery, CallRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Replay(String),
}

/// Which bot: by id, or by a username the record has seen in a getMe answer.
#[derive(Clone, Debug, PartialEq)]
pub enum BotSel {
    Id(BotId),
    Username(String),
}

impl std::str::FromStr for BotSel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix('@') {
            if schemas::valid_username(name) {
                return Ok(BotSel::Username(name.to_owned()));
            }
            return Err(format!("{s:?} is not a username"));
        }
        s.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(|id| BotSel::Id(BotId(id)))
            .ok_or_else(|| format!("{s:?} is neither a bot id nor @username"))
    }
}

/// A moment given on the command line: RFC 3339 (`2026-12-01T10:00:00Z`) or a time before now
/// (`15m`, `2h`, `7d`, `1h 30m`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| format!("{s:?} is before 1970"));
    }
    humantime::parse_duration(s)
        .map(|d| now_ms - d.as_millis().min(i64::MAX as u128) as i64)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 15m, 2h, 7d"))
}

/// A time as `2026-12-01T10:00:00.123Z`.
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The filters `audit`, `replay` and their tests share. With none, the whole record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub bot: Option<BotSel>,
    pub method: Option<String>,
    /// ms since the epoch (see [`parse_time`]).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub status: Option<u16>,
    pub error_code: Option<i64>,
}

/// Rows read per page: full rows carry an answer (up to a few hundred KB for the odd big
/// one) and a sealed request, light rows only what counting needs.
const PAGE: usize = 256;
const LIGHT_PAGE: usize = 2000;

/// How far back `--follow` looks again for calls recorded late: a row is written when its
/// call finishes, after calls that arrived later (a long poll, an upload). A call that takes
/// longer than this to finish is listed by `audit` but may be missed by `--follow`.
pub const FOLLOW_LAG_MS: i64 = 10 * 60 * 1000;

impl Selection {
    /// The store query of this selection (a username looked up in the store); `Ok(None)` when
    /// the selection can match nothing (an unknown username).
    pub async fn query(&self, bots: &dyn BotStore) -> Result<Option<CallQuery>, AuditError> {
        let bot_id = match &self.bot {
            None => None,
            Some(BotSel::Id(b)) => Some(*b),
            Some(BotSel::Username(u)) => match bots.bot_by_username(u).await? {
                Some(b) => Some(b),
                None => return Ok(None),
            },
        };
        if let (Some(a), Some(b)) = (self.since, self.until) {
            if a >= b {
                return Err(AuditError::Usage("--since must be before --until".into()));
            }
        }
        Ok(Some(CallQuery {
            bot_id,
            from_ms: self.since.unwrap_or(0),
            // The record as it stands now: a replay into a gateway recording into this very
            // store must not find its own calls and replay them again.
            to_ms: self.until.unwrap_or(schemas::now_ms() + 1),
            method: self.method.clone(),
            http_status: self.status,
            error_code: self.error_code,
            after: None,
            limit: PAGE,
            light: false,
        }))
    }
}

/// The selected rows a page at a time, oldest first.
pub struct Walk<'a> {
    store: &'a dyn Store,
    query: Option<CallQuery>,
    done: bool,
}

impl<'a> Walk<'a> {
    pub async fn new(store: &'a dyn Store, selection: &Selection) -> Result<Self, AuditError> {
        Self::with(store, selection, false).await
    }

    /// A walk over light rows (see [`store::CallQuery::light`]): for counting.
    pub async fn light(store: &'a dyn Store, selection: &Selection) -> Result<Self, AuditError> {
        Self::with(store, selection, true).await
    }

    async fn with(
        store: &'a dyn Store,
        selection: &Selection,
        light: bool,
    ) -> Result<Self, AuditError> {
        let mut query = selection.query(store).await?;
        if let Some(q) = query.as_mut() {
            q.light = light;
            q.limit = if light { LIGHT_PAGE } else { PAGE };
        }
        Ok(Self {
            store,
            done: query.is_none(),
            query,
        })
    }

    /// The next page; empty when the record has no more (a later call may find new rows:
    /// what `--follow` does).
    pub async fn next_page(&mut self) -> Result<Vec<CallRow>, AuditError> {
        let Some(q) = self.query.as_mut() else {
            return Ok(Vec::new());
        };
        let rows = self.store.calls(q).await?;
        if let Some(last) = rows.last() {
            q.after = Some(last.call_id);
        }
        self.done = rows.len() < q.limit;
        Ok(rows)
    }

    /// Whether the last page was the last one of the record as it stood.
    pub fn at_end(&self) -> bool {
        self.done
    }

    /// The last call seen.
    pub fn cursor(&self) -> Option<CallId> {
        self.query.as_ref().and_then(|q| q.after)
    }
}

/// `--follow`: calls recorded since the last look, each once. Rows are written when calls
/// finish, so each look goes back [`FOLLOW_LAG_MS`] and skips the calls already shown (their
/// ids are remembered for that long, no longer).
pub struct Follow<'a> {
    store: &'a dyn Store,
    query: Option<CallQuery>,
    until: Option<i64>,
    seen: std::collections::BTreeSet<CallId>,
}

impl<'a> Follow<'a> {
    pub async fn new(store: &'a dyn Store, selection: &Selection) -> Result<Self, AuditError> {
        Ok(Self {
            store,
            query: selection.query(store).await?,
            until: selection.until,
            seen: Default::default(),
        })
    }

    /// Remembers a call shown already (by the listing before following).
    pub fn shown(&mut self, id: CallId) {
        if id.time_ms() >= schemas::now_ms() - FOLLOW_LAG_MS {
            self.seen.insert(id);
        }
    }

    /// The calls recorded since the last look, oldest first.
    pub async fn look(&mut self) -> Result<Vec<CallRow>, AuditError> {
        let Some(base) = &self.query else {
            return Ok(Vec::new());
        };
        let now = schemas::now_ms();
        let from = base.from_ms.max(now - FOLLOW_LAG_MS);
        // Forget what is older than the look-back: it cannot come again.
        self.seen = self.seen.split_off(&CallId::first_of_ms(from));
        let mut q = CallQuery {
            from_ms: from,
            to_ms: self.query_until(now),
            after: None,
            limit: PAGE,
            ..base.clone()
        };
        let mut out = Vec::new();
        loop {
            let rows = self.store.calls(&q).await?;
            let done = rows.len() < q.limit;
            q.after = rows.last().map(|r| r.call_id);
            for r in rows {
                if self.seen.insert(r.call_id) {
                    out.push(r);
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// `--until` stays; without it the window moves with now.
    fn query_until(&self, now: i64) -> i64 {
        self.until.unwrap_or(now + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::CallStore;

    /// A call recorded after later ones (it finished last) is still shown, once.
    #[tokio::test]
    async fn follow_shows_late_rows_once() {
        let store = store::sqlite::SqliteStore::in_memory().unwrap();
        let now = schemas::now_ms();
        let sel = Selection::default();
        let mut follow = Follow::new(&store, &sel).await.unwrap();
        let first = store::testsuite::call_row(1, now - 1000, "sendMessage");
        store.record_call(&first).await.unwrap();
        follow.shown(first.call_id);
        assert!(follow.look().await.unwrap().is_empty());
        // Arrived before `first`, finished after it.
        let late = store::testsuite::call_row(1, now - 2000, "getUpdates");
        store.record_call(&late).await.unwrap();
        let seen = follow.look().await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].call_id, late.call_id);
        assert!(follow.look().await.unwrap().is_empty());
        let next = store::testsuite::call_row(1, schemas::now_ms(), "getMe");
        store.record_call(&next).await.unwrap();
        assert_eq!(follow.look().await.unwrap()[0].call_id, next.call_id);
        // Past the look-back: not looked at again.
        let ancient = store::testsuite::call_row(1, now - 2 * FOLLOW_LAG_MS, "getMe");
        store.record_call(&ancient).await.unwrap();
        assert!(follow.look().await.unwrap().is_empty());
    }

    #[test]
    fn times_are_rfc3339_or_relative() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("15m", now), Ok(now - 15 * 60_000));
        assert_eq!(parse_time("2h", now), Ok(now - 2 * 3_600_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(
            parse_time("2026-12-01T10:00:00Z", now),
            Ok(1_796_119_200_000)
        );
        assert_eq!(format_time(1_796_119_200_123), "2026-12-01T10:00:00.123Z");
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn bots_are_ids_or_usernames() {
        assert_eq!("123".parse(), Ok(BotSel::Id(BotId(123))));
        assert_eq!("@echo_bot".parse(), Ok(BotSel::Username("echo_bot".into())));
        assert!("@x y".parse::<BotSel>().is_err());
        assert!("-5".parse::<BotSel>().is_err());
        assert!("abc".parse::<BotSel>().is_err());
    }
}
