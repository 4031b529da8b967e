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
use store::{CallQuery, CallRow, Store, StoreError};

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

/// Rows read per page.
const PAGE: usize = 2000;

impl Selection {
    /// The store query of this selection (a username looked up in the store); `Ok(None)` when
    /// the selection can match nothing (an unknown username).
    pub async fn query(&self, store: &dyn Store) -> Result<Option<CallQuery>, AuditError> {
        let bot_id = match &self.bot {
            None => None,
            Some(BotSel::Id(b)) => Some(*b),
            Some(BotSel::Username(u)) => match store.bot_by_username(u).await? {
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
            to_ms: self.until.unwrap_or(i64::MAX),
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

#[cfg(test)]
mod tests {
    use super::*;

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
