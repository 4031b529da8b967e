//! `Envelope { header, payload }`: every record on the bus.
//!
//! The header is readable without knowing the payload, so a reader can check the schema
//! version and the record kind first. A reader meeting a version it does not know skips the
//! record (and counts it): it never guesses.

use crate::ids::{BotId, CallId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version this build writes.
///
/// - 1: the first format.
/// - 2: bodies that are JSON (almost every Bot API answer) may be kept as JSON
///   (`{"encoding": "json", "json": {...}}`) rather than as an escaped string. A reader of
///   version 1 cannot read them, so the version says so.
pub const SCHEMA_VERSION: u16 = 2;

/// The oldest version this build reads: every version-1 record is a version-2 record.
pub const OLDEST_READ: u16 = 1;

fn readable(schema: u16) -> bool {
    (OLDEST_READ..=SCHEMA_VERSION).contains(&schema)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Call,
    Response,
    Update,
    UpdatesKept,
    CallCancelled,
    FloodTurn,
}

impl RecordKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::Call => "call",
            RecordKind::Response => "response",
            RecordKind::Update => "update",
            RecordKind::UpdatesKept => "updates_kept",
            RecordKind::CallCancelled => "call_cancelled",
            RecordKind::FloodTurn => "flood_turn",
        }
    }
}

/// A payload type names its kind, so encoding and decoding cannot mix them up.
pub trait Payload: Serialize + DeserializeOwned {
    const KIND: RecordKind;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Schema version of the whole record.
    pub schema: u16,
    pub kind: RecordKind,
    /// The call this record belongs to; a response carries its call's id.
    pub call_id: CallId,
    /// The bus key: every record of a bot lands in one partition.
    pub bot_id: BotId,
    /// Role and instance that wrote the record (`ingest/<instance>`), for audit.
    pub producer: String,
    /// When the record was written, ms since the epoch.
    pub time_ms: i64,
    /// Where the answer to a call goes: the reply topic of the ingest instance that holds the
    /// client's connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// On a call the router handed to the files stage: the router keeps the call's place in
    /// its chat's flood control queue, and the files stage takes its turns from it over
    /// `flood.turns` ([`crate::FloodTurn`]). Absent (false) everywhere else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flood_place: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    pub header: Header,
    pub payload: P,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record has schema version {0}, this build reads {OLDEST_READ} to {SCHEMA_VERSION}")]
    UnknownVersion(u16),
    #[error("record is a {found}, expected a {expected}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
}

impl<P: Payload> Envelope<P> {
    pub fn new(
        call_id: CallId,
        bot_id: BotId,
        producer: &str,
        reply_to: Option<String>,
        payload: P,
    ) -> Self {
        Self {
            header: Header {
                schema: SCHEMA_VERSION,
                kind: P::KIND,
                call_id,
                bot_id,
                producer: producer.to_owned(),
                time_ms: crate::now_ms(),
                reply_to,
                flood_place: false,
            },
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Most records are a few hundred bytes: one allocation instead of a doubling series.
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, self).expect("records serialise");
        out
    }

    /// Decodes a record of kind `P`, refusing unknown versions and other kinds.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        // One parse for the common case; a record that does not parse as this build's `P` is
        // parsed again, by its header alone, to say why.
        match serde_json::from_slice::<Self>(bytes) {
            Ok(env) if !readable(env.header.schema) => {
                Err(DecodeError::UnknownVersion(env.header.schema))
            }
            Ok(env) if env.header.kind != P::KIND => Err(DecodeError::WrongKind {
                expected: P::KIND.as_str(),
                found: env.header.kind.as_str().to_owned(),
            }),
            Ok(env) => Ok(env),
            Err(error) => Err(Self::why_not(bytes).unwrap_or(DecodeError::Json(error))),
        }
    }

    /// What the header of a record that is not a `P` of this version says it is.
    fn why_not(bytes: &[u8]) -> Option<DecodeError> {
        #[derive(Deserialize)]
        struct PeekHeader {
            schema: u16,
            kind: String,
        }
        #[derive(Deserialize)]
        struct Peek {
            header: PeekHeader,
        }
        let peek: Peek = serde_json::from_slice(bytes).ok()?;
        if !readable(peek.header.schema) {
            return Some(DecodeError::UnknownVersion(peek.header.schema));
        }
        (peek.header.kind != P::KIND.as_str()).then(|| DecodeError::WrongKind {
            expected: P::KIND.as_str(),
            found: peek.header.kind,
        })
    }
}
