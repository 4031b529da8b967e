//! Identifier newtypes, so a bot id is never confused with a chat id or a call id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// One Bot API call, from the moment ingest accepts it. UUIDv7: time-ordered, so the audit log
/// sorts by arrival without a second column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub Uuid);

impl CallId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// A new id carrying the time `ms` (ms since the epoch) instead of now: for a call
    /// recorded after it arrived, so it still sorts by arrival.
    pub fn at_ms(ms: i64) -> Self {
        let ms = ms.max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            ((ms % 1000) * 1_000_000) as u32,
        );
        Self(Uuid::new_v7(ts))
    }

    /// The smallest id of the millisecond `ms`: every id made at `ms` or later sorts at or
    /// above it, every id made before below.
    pub fn first_of_ms(ms: i64) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&(ms.clamp(0, (1 << 48) - 1) as u64).to_be_bytes()[2..]);
        Self(Uuid::from_bytes(b))
    }

    /// The arrival time in the id, ms since the epoch.
    pub fn time_ms(&self) -> i64 {
        let b = self.0.as_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        u64::from_be_bytes(ms) as i64
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for CallId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The numeric prefix of a bot token: the bot's Telegram user id. Records are keyed by it.
/// `BotId(0)` marks a request whose token could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BotId(pub i64);

impl BotId {
    pub const UNKNOWN: BotId = BotId(0);

    /// The bus key: records of one bot share a partition.
    pub fn key(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id made for a time sorts by that time, and carries it.
    #[test]
    fn ids_carry_their_time() {
        let a = CallId::at_ms(1_700_000_000_123);
        let b = CallId::at_ms(1_700_000_000_124);
        assert_eq!(a.time_ms(), 1_700_000_000_123);
        assert!(a < b);
        assert!(CallId::first_of_ms(1_700_000_000_123) <= a);
        assert!(CallId::first_of_ms(1_700_000_000_124) > a);
        let now = crate::now_ms();
        assert!((CallId::new().time_ms() - now).abs() < 1000);
    }
}
