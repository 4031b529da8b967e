//! The `responses` topic: the answer to one call, addressed to the ingest instance waiting
//! for it (the header's `reply_to` of the call).

use crate::body::BodyBytes;
use crate::envelope::{Payload, RecordKind};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The HTTP status the client gets.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body, byte for byte as upstream sent it (or the gateway's own error).
    pub body: BodyBytes,
    pub origin: Origin,
    #[serde(default)]
    pub stages: Stages,
}

impl Payload for Response {
    const KIND: RecordKind = RecordKind::Response;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Upstream (Telegram or the local Bot API server) answered.
    Upstream,
    /// The gateway answered by itself (an error, or an enhanced method).
    Gateway,
    /// A redelivered call answered from its recorded outcome.
    Stored,
}

/// Time spent per stage, for the audit log and the latency histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stages {
    /// From ingest publishing the call to a processor taking it.
    pub queue_ms: u64,
    /// Upstream round trip.
    pub upstream_ms: u64,
}

/// A processor's own refusal as the bot's answer, so `?` carries an [`ApiError`] out of a
/// step that answers with a [`Response`].
impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        Response::from_error(&e)
    }
}

impl Response {
    /// An answer the gateway makes itself: `value` as JSON, with `status`.
    pub fn gateway_json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: Some("application/json".into()),
            // A Value always serialises (its map keys are strings).
            body: BodyBytes::inline(&serde_json::to_vec(value).unwrap_or_default()),
            origin: Origin::Gateway,
            stages: Stages::default(),
        }
    }

    pub fn from_error(e: &ApiError) -> Self {
        Self {
            status: e.status(),
            content_type: Some("application/json".into()),
            body: BodyBytes::inline(&e.to_json()),
            origin: Origin::Gateway,
            stages: Stages::default(),
        }
    }

    /// The Bot API error code in the body when this is an error answer.
    pub fn error_code(&self) -> Option<i64> {
        if self.status < 400 {
            return None;
        }
        let bytes = self.body.inline_bytes()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("error_code")?.as_i64()
    }

    pub fn description(&self) -> Option<String> {
        let bytes = self.body.inline_bytes()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("description")?.as_str().map(str::to_owned)
    }
}
