//! The `calls` topic: one record per HTTP request a bot made to `/bot<token>/<method>`.
//!
//! The record keeps the request as the bot encoded it (query string, and a body that is JSON,
//! a form, multipart parts or opaque bytes), so the passthrough can forward it in the same
//! encoding and an operator can replay it. File parts are blob references.

use crate::body::{BlobRef, BodyBytes};
use crate::envelope::{Payload, RecordKind};
use crate::error::ApiError;
use crate::seal::{SealedToken, TokenFingerprint};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The token sealed under the cluster key; `None` when the token had the wrong shape.
    pub token: Option<SealedToken>,
    pub token_fingerprint: TokenFingerprint,
    /// `/bot<token>/test/<method>`: Telegram's test environment.
    #[serde(default)]
    pub test_env: bool,
    /// As the client spelled it (methods are case-insensitive).
    pub method: String,
    /// `GET` or `POST`.
    pub http_method: String,
    /// The raw query string, without `?`.
    #[serde(default)]
    pub query: String,
    pub body: CallBody,
    /// When the client stops waiting for this call, ms since the epoch.
    pub deadline_ms: i64,
    /// Set when ingest has already answered the client with this error (bad token, malformed
    /// body): the record exists for the audit log and must not be executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<ApiError>,
    /// What the file stages found so far, on a call crossing them (`calls.media`,
    /// `calls.send`; [`crate::staged`]). Absent everywhere else. Boxed: it is larger than the
    /// rest of the call, which every call moves between its stages' futures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Box<crate::staged::Staged>>,
}

impl Payload for Call {
    const KIND: RecordKind = RecordKind::Call;
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallBody {
    Empty,
    Json {
        value: Value,
    },
    Form {
        pairs: Vec<(String, String)>,
    },
    Multipart {
        parts: Vec<Part>,
    },
    /// A body of another content type; forwarded as it came.
    Other {
        content_type: String,
        data: BodyBytes,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
    Text {
        name: String,
        value: String,
    },
    File {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        blob: BlobRef,
    },
}

impl<'de> Deserialize<'de> for CallBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::decode(d)
    }
}

impl crate::tagged::Tagged for CallBody {
    const TAG: &'static str = "kind";
    const EXPECTING: &'static str = "a call body";

    fn variant<'de, A: serde::de::MapAccess<'de>>(
        variant: &str,
        fields: serde::de::value::MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Json {
            value: Value,
        }
        #[derive(Deserialize)]
        struct Form {
            pairs: Vec<(String, String)>,
        }
        #[derive(Deserialize)]
        struct Multipart {
            parts: Vec<Part>,
        }
        #[derive(Deserialize)]
        struct Other {
            content_type: String,
            data: BodyBytes,
        }
        Ok(match variant {
            "empty" => crate::tagged::unit(fields, CallBody::Empty)?,
            "json" => CallBody::Json {
                value: Json::deserialize(fields)?.value,
            },
            "form" => CallBody::Form {
                pairs: Form::deserialize(fields)?.pairs,
            },
            "multipart" => CallBody::Multipart {
                parts: Multipart::deserialize(fields)?.parts,
            },
            "other" => {
                let o = Other::deserialize(fields)?;
                CallBody::Other {
                    content_type: o.content_type,
                    data: o.data,
                }
            }
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["empty", "json", "form", "multipart", "other"],
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::decode(d)
    }
}

impl crate::tagged::Tagged for Part {
    const TAG: &'static str = "kind";
    const EXPECTING: &'static str = "a multipart part";

    fn variant<'de, A: serde::de::MapAccess<'de>>(
        variant: &str,
        fields: serde::de::value::MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Text {
            name: String,
            value: String,
        }
        #[derive(Deserialize)]
        struct File {
            name: String,
            #[serde(default)]
            file_name: Option<String>,
            #[serde(default)]
            content_type: Option<String>,
            blob: BlobRef,
        }
        Ok(match variant {
            "text" => {
                let t = Text::deserialize(fields)?;
                Part::Text {
                    name: t.name,
                    value: t.value,
                }
            }
            "file" => {
                let f = File::deserialize(fields)?;
                Part::File {
                    name: f.name,
                    file_name: f.file_name,
                    content_type: f.content_type,
                    blob: f.blob,
                }
            }
            other => return Err(serde::de::Error::unknown_variant(other, &["text", "file"])),
        })
    }
}

/// Parameters whose values are secrets of the bot and are kept out of the audit log.
const REDACTED: &[&str] = &["secret_token"];

impl Call {
    /// The parameters as the Bot API sees them: the query string, then the body (a body value
    /// wins over a query value of the same name). File parts appear as
    /// `{"file": {"file_name", "size", "sha256"}}`.
    pub fn params(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in form_urlencoded::parse(self.query.as_bytes()) {
            out.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        match &self.body {
            CallBody::Empty | CallBody::Other { .. } => {}
            CallBody::Json { value } => {
                if let Value::Object(m) = value {
                    for (k, v) in m {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            CallBody::Form { pairs } => {
                for (k, v) in pairs {
                    out.insert(k.clone(), Value::String(v.clone()));
                }
            }
            CallBody::Multipart { parts } => {
                for p in parts {
                    match p {
                        Part::Text { name, value } => {
                            out.insert(name.clone(), Value::String(value.clone()));
                        }
                        Part::File {
                            name,
                            file_name,
                            blob,
                            ..
                        } => {
                            out.insert(
                                name.clone(),
                                serde_json::json!({"file": {
                                    "file_name": file_name,
                                    "size": blob.size,
                                    "sha256": blob.sha256,
                                }}),
                            );
                        }
                    }
                }
            }
        }
        out
    }

    /// Sets a top-level parameter to `value` wherever the call carries it (the query, a form
    /// or JSON body, a multipart text part), keeping the call's encoding; false when the call
    /// has no such parameter.
    pub fn set_param(&mut self, name: &str, value: &str) -> bool {
        let mut found = false;
        if form_urlencoded::parse(self.query.as_bytes()).any(|(k, _)| k == name) {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(self.query.as_bytes())
                .map(|(k, v)| {
                    let v = if k == name {
                        value.into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            self.query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            found = true;
        }
        match &mut self.body {
            CallBody::Empty | CallBody::Other { .. } => {}
            CallBody::Json {
                value: Value::Object(m),
            } => {
                if let Some(v) = m.get_mut(name) {
                    *v = Value::String(value.into());
                    found = true;
                }
            }
            CallBody::Json { .. } => {}
            CallBody::Form { pairs } => {
                for (_, v) in pairs.iter_mut().filter(|(k, _)| k == name) {
                    *v = value.into();
                    found = true;
                }
            }
            CallBody::Multipart { parts } => {
                for p in parts.iter_mut() {
                    if let Part::Text { name: n, value: v } = p {
                        if n == name {
                            *v = value.into();
                            found = true;
                        }
                    }
                }
            }
        }
        found
    }

    /// [`Call::params`] with secrets replaced, for the audit log.
    pub fn audit_params(&self) -> Map<String, Value> {
        let mut p = self.params();
        for k in REDACTED {
            if let Some(v) = p.get_mut(*k) {
                *v = Value::String("<redacted>".into());
            }
        }
        p
    }

    /// Every blob the call references.
    pub fn blobs(&self) -> Vec<&BlobRef> {
        let mut out = Vec::new();
        match &self.body {
            CallBody::Multipart { parts } => {
                for p in parts {
                    if let Part::File { blob, .. } = p {
                        out.push(blob);
                    }
                }
            }
            CallBody::Other {
                data: BodyBytes::Blob { blob },
                ..
            } => out.push(blob),
            _ => {}
        }
        out
    }
}

/// How a bot encoded a call: what a replay sends again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Parameters in the query string only (or none).
    Query,
    Json,
    Form,
    Multipart,
    /// A body of another content type.
    Other,
}

impl Encoding {
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Query => "query",
            Encoding::Json => "json",
            Encoding::Form => "form",
            Encoding::Multipart => "multipart",
            Encoding::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "query" => Encoding::Query,
            "json" => Encoding::Json,
            "form" => Encoding::Form,
            "multipart" => Encoding::Multipart,
            "other" => Encoding::Other,
            _ => return None,
        })
    }
}

impl Call {
    pub fn encoding(&self) -> Encoding {
        match &self.body {
            CallBody::Empty => Encoding::Query,
            CallBody::Json { .. } => Encoding::Json,
            CallBody::Form { .. } => Encoding::Form,
            CallBody::Multipart { .. } => Encoding::Multipart,
            CallBody::Other { .. } => Encoding::Other,
        }
    }

    /// The request as the bot sent it (token, query, body; files by blob reference), sealed
    /// for the audit row: what `telepipe replay` sends again. Sealed because parameters may be
    /// secrets (`secret_token`) and the token is one.
    pub fn seal_request(&self, sealer: &crate::Sealer, bot: crate::BotId) -> String {
        #[derive(Serialize)]
        struct Sealing<'a> {
            v: u32,
            token: Option<&'a SealedToken>,
            test_env: bool,
            method: &'a str,
            http_method: &'a str,
            query: &'a str,
            body: &'a CallBody,
        }
        // Sized for a call without a body at once (serde_json starts small and doubles).
        let mut clear = Vec::with_capacity(256 + self.method.len() + self.query.len());
        serde_json::to_writer(
            &mut clear,
            &Sealing {
                v: RecordedRequest::VERSION,
                token: self.token.as_ref(),
                test_env: self.test_env,
                method: &self.method,
                http_method: &self.http_method,
                query: &self.query,
                body: &self.body,
            },
        )
        .expect("plain data serialises");
        sealer.seal_for(crate::seal::Purpose::Request, bot, &clear)
    }
}

/// A call's request opened from its audit row ([`Call::seal_request`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RecordedRequest {
    pub v: u32,
    /// The bot's token, itself sealed (open with [`crate::Sealer::open`]); `None` when the
    /// client's token had no token's shape.
    pub token: Option<SealedToken>,
    pub test_env: bool,
    pub method: String,
    pub http_method: String,
    pub query: String,
    pub body: CallBody,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordedRequestError {
    #[error(transparent)]
    Seal(#[from] crate::SealError),
    #[error("the recorded request is malformed: {0}")]
    Malformed(String),
    #[error("the recorded request has version {0}, newer than this build reads")]
    Version(u32),
}

impl RecordedRequest {
    pub const VERSION: u32 = 1;

    pub fn open(
        sealer: &crate::Sealer,
        bot: crate::BotId,
        sealed: &str,
    ) -> Result<Self, RecordedRequestError> {
        let clear = sealer.open_for(crate::seal::Purpose::Request, bot, sealed)?;
        // serde's message may quote the request's values (secrets): only where it broke.
        let r: RecordedRequest = serde_json::from_slice(&clear).map_err(|e| {
            RecordedRequestError::Malformed(format!("at line {} column {}", e.line(), e.column()))
        })?;
        if r.v > Self::VERSION {
            return Err(RecordedRequestError::Version(r.v));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod recorded_tests {
    use super::*;
    use crate::{BotId, BotToken, SealKey, Sealer};

    fn call(body: CallBody, query: &str) -> Call {
        let sealer = Sealer::new(&SealKey::generate());
        let token = BotToken::parse("42:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        Call {
            token: Some(sealer.seal(&token)),
            token_fingerprint: sealer.fingerprint(token.expose()),
            test_env: true,
            method: "setWebhook".into(),
            http_method: "POST".into(),
            query: query.into(),
            body,
            deadline_ms: 0,
            rejected: None,
            staged: None,
        }
    }

    /// A parameter set again keeps the call's encoding, wherever the parameter was.
    #[test]
    fn a_parameter_is_set_where_the_call_carries_it() {
        let mut c = call(CallBody::Empty, "chat_id=%40alice&text=a+b");
        assert!(c.set_param("chat_id", "42"));
        assert_eq!(c.query, "chat_id=42&text=a+b");
        assert!(!c.set_param("user_id", "1"));
        let mut c = call(
            CallBody::Json {
                value: serde_json::json!({"chat_id": "@alice", "text": "x"}),
            },
            "",
        );
        assert!(c.set_param("chat_id", "42"));
        assert_eq!(c.params()["chat_id"], "42");
        assert_eq!(c.params()["text"], "x");
        let mut c = call(
            CallBody::Form {
                pairs: vec![("from_chat_id".into(), "@bob".into())],
            },
            "",
        );
        assert!(c.set_param("from_chat_id", "-7"));
        assert_eq!(c.params()["from_chat_id"], "-7");
        let mut c = call(
            CallBody::Multipart {
                parts: vec![Part::Text {
                    name: "user_id".into(),
                    value: "@carol".into(),
                }],
            },
            "",
        );
        assert!(c.set_param("user_id", "9"));
        assert_eq!(c.params()["user_id"], "9");
    }

    /// What replay needs comes back whole from the sealing, for every encoding; the sealing
    /// shows neither the token nor a secret parameter.
    #[test]
    fn a_sealed_request_opens_to_the_call_as_sent() {
        let sealer = Sealer::new(&SealKey::generate());
        let blob = BlobRef {
            key: "sha256/ab/cd/abcd".into(),
            size: 3,
            sha256: "abcd".into(),
        };
        for (body, encoding) in [
            (CallBody::Empty, Encoding::Query),
            (
                CallBody::Json {
                    value: serde_json::json!({"url": "http://x", "secret_token": "s3cr3t"}),
                },
                Encoding::Json,
            ),
            (
                CallBody::Form {
                    pairs: vec![("secret_token".into(), "s3cr3t".into())],
                },
                Encoding::Form,
            ),
            (
                CallBody::Multipart {
                    parts: vec![
                        Part::Text {
                            name: "secret_token".into(),
                            value: "s3cr3t".into(),
                        },
                        Part::File {
                            name: "certificate".into(),
                            file_name: Some("c.pem".into()),
                            content_type: None,
                            blob: blob.clone(),
                        },
                    ],
                },
                Encoding::Multipart,
            ),
        ] {
            let c = call(body, "secret_token=q");
            assert_eq!(c.encoding(), encoding);
            assert_eq!(Encoding::parse(encoding.as_str()), Some(encoding));
            let sealed = c.seal_request(&sealer, BotId(42));
            assert!(!sealed.contains("s3cr3t") && !sealed.contains("AAHdq"));
            let r = RecordedRequest::open(&sealer, BotId(42), &sealed).unwrap();
            assert_eq!(r.token, c.token);
            assert_eq!((r.test_env, r.query.as_str()), (true, "secret_token=q"));
            assert_eq!(
                (r.method.as_str(), r.http_method.as_str()),
                ("setWebhook", "POST")
            );
            assert_eq!(r.body, c.body);
            assert!(RecordedRequest::open(&sealer, BotId(43), &sealed).is_err());
        }
    }
}

/// On `calls.cancel`: the client of the call in the header (`call_id`, keyed by its bot) went
/// away before its answer came. A call still waiting in a flood control queue is then not sent
/// (ENHANCED.md, "Flood control"); one already sent keeps its outcome. Every processor reads
/// all of the topic, since the call may wait in any stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCancelled {}

impl Payload for CallCancelled {
    const KIND: RecordKind = RecordKind::CallCancelled;
}

/// On `flood.turns` (keyed by bot; every processor reads all of it): how a files stage in one
/// process takes its turns from the router that keeps its call's place in its chat's flood
/// control queue (the call's header says `flood_place`). The header's `call_id` is the call's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum FloodTurn {
    /// Files stage: the call is about to start its work; it waits for its chat's turn. `n`
    /// tells the answer to this ask from any other (a stale one, or another process's).
    AskTurn { n: u32 },
    /// Router: it is the call's turn in its chat.
    Turn { n: u32 },
    /// Files stage: the call is ready to send to its chat.
    AskSend { n: u32 },
    /// Router: the chat's and the bot's buckets gave it a token: send now.
    Send { n: u32 },
    /// Router: the call's deadline would pass first; it gets Telegram's 429.
    Late { n: u32, retry_after: u64 },
    /// Files stage: sent; `retry_after` when Telegram answered 429 (nothing executed).
    Sent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Files stage: the call is over; its place is given up.
    Over,
}

impl FloodTurn {
    /// The ask an answer of the router answers.
    pub fn answers(&self) -> Option<u32> {
        match self {
            FloodTurn::Turn { n } | FloodTurn::Send { n } | FloodTurn::Late { n, .. } => Some(*n),
            _ => None,
        }
    }
}

impl Payload for FloodTurn {
    const KIND: RecordKind = RecordKind::FloodTurn;
}
