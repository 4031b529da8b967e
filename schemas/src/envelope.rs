//! `Envelope { header, payload }`: every record on the bus.
//!
//! The header is readable without knowing the payload, so a reader can check the schema
//! version and the record kind first. A reader meeting a version it does not know skips the
//! record (and counts it): it never guesses.

use crate::ids::{BotId, CallId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Call,
    Response,
    Update,
}

impl RecordKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::Call => "call",
            RecordKind::Response => "response",
            RecordKind::Update => "update",
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
    #[error("record has schema version {0}, this build reads {SCHEMA_VERSION}")]
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
            },
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialise")
    }

    /// Decodes a record of kind `P`, refusing unknown versions and other kinds.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct PeekHeader {
            schema: u16,
            kind: String,
        }
        #[derive(Deserialize)]
        struct Peek {
            header: PeekHeader,
        }
        let peek: Peek = serde_json::from_slice(bytes)?;
        if peek.header.schema != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion(peek.header.schema));
        }
        if peek.header.kind != P::KIND.as_str() {
            return Err(DecodeError::WrongKind {
                expected: P::KIND.as_str(),
                found: peek.header.kind,
            });
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}
