//! setWebhook, deleteWebhook, getWebhookInfo and getUpdates, as the gateway keeps webhooks
//! ([`crate::webhooks`]). setWebhook's parameters are checked here, before anything is
//! asked of upstream or the store; what needs the network (the URL's destination, the
//! certificate's bytes) is checked when the command runs.

use super::Command;
use crate::uploads::{file_part, text};
use schemas::{ApiError, BlobRef, Call};
use serde_json::{Map, Value};

/// The largest certificate read from a `certificate` part.
const MAX_CERTIFICATE: u64 = 64 * 1024;

/// A webhook to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct SetWebhook {
    /// As the bot gave it (trimmed): what getWebhookInfo shows.
    pub url: String,
    pub parsed: url::Url,
    pub secret_token: Option<String>,
    pub max_connections: i64,
    /// The JSON array, as text.
    pub allowed_updates: Option<String>,
    /// The uploaded PEM, read when the command runs.
    pub certificate: Option<BlobRef>,
    pub drop_pending_updates: bool,
}

/// The gateway's webhook to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteWebhook {
    pub drop_pending_updates: bool,
    /// The bot's own deleteWebhook, which goes upstream as it came; otherwise (a setWebhook
    /// with an empty URL) the gateway makes one.
    pub as_sent: bool,
}

/// A getUpdates, answered from the updates the gateway keeps ([`crate::polls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetUpdates {
    /// It has a timeout, so it mostly waits.
    pub long_poll: bool,
    /// Confirms every update below it; negative: only the last `-offset` updates stay.
    pub offset: Option<i64>,
    /// 1 to 100 updates at most (100 when not given; out of range: clamped, as Telegram).
    /// `timeout` is clamped to Telegram's 50 s.
    pub limit: usize,
    /// How long to wait for an update when none is there.
    pub timeout: std::time::Duration,
    /// The JSON array, as text: what the gateway then asks Telegram for.
    pub allowed_updates: Option<String>,
    /// The gateway's `reader`: a follower with an offset of its own; `""` is the bot itself.
    pub reader: String,
}

/// The longest name of a reader.
const MAX_READER: usize = 64;

fn bad(description: &str) -> ApiError {
    ApiError::bad_request(description)
}

fn flag(params: &Map<String, Value>, k: &str) -> bool {
    params
        .get(k)
        .is_some_and(|v| v == true || v == "true" || v == "1" || v == "True")
}

/// `allowed_updates`: a JSON array (or its text), kept as text; empty or absent: none given.
fn allowed_updates(params: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match params.get("allowed_updates") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(Value::Array(a.clone()).to_string())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Array(_)) => Ok(Some(v.to_string())),
            _ => Err(bad("can't parse allowed_updates JSON array")),
        },
        Some(_) => Err(bad("can't parse allowed_updates JSON array")),
    }
}

pub(super) fn parse_set(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    let drop_pending_updates = flag(&params, "drop_pending_updates");
    let url = params.get("url").map(text).unwrap_or_default();
    let url = url.trim();
    if url.is_empty() {
        // As Telegram: an empty URL removes the webhook.
        return Ok(Command::DeleteWebhook(DeleteWebhook {
            drop_pending_updates,
            as_sent: false,
        }));
    }
    let Some(parsed) = url::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    else {
        return Err(bad(
            "bad webhook: an http:// or https:// URL must be provided for webhook",
        ));
    };
    let secret_token = params
        .get("secret_token")
        .map(text)
        .filter(|s| !s.is_empty());
    if let Some(s) = &secret_token {
        let ok = s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(bad(
                "bad webhook: secret token contains unallowed characters",
            ));
        }
    }
    let max_connections = match params.get("max_connections").map(text) {
        None => 40,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(bad(
                    "bad webhook: max_connections must be between 1 and 100",
                ))
            }
        },
    };
    let allowed_updates = allowed_updates(&params)?;
    let certificate = match file_part(call, "certificate") {
        Some((blob, ..)) if blob.size > MAX_CERTIFICATE => {
            return Err(bad("bad webhook: the certificate is too big"))
        }
        Some((blob, ..)) => Some(blob.clone()),
        None => None,
    };
    Ok(Command::SetWebhook(SetWebhook {
        url: url.to_owned(),
        parsed,
        secret_token,
        max_connections,
        allowed_updates,
        certificate,
        drop_pending_updates,
    }))
}

pub(super) fn parse_delete(call: &Call) -> Result<Command, ApiError> {
    Ok(Command::DeleteWebhook(DeleteWebhook {
        drop_pending_updates: flag(&call.params(), "drop_pending_updates"),
        as_sent: true,
    }))
}

/// A number parameter as Telegram reads it: a JSON number or its text; anything else
/// (`NaN` too) is 0.
fn number(v: Option<&Value>) -> f64 {
    let n = match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().unwrap_or(0.0),
        _ => 0.0,
    };
    if n.is_finite() {
        n
    } else {
        0.0
    }
}

/// Telegram's longest getUpdates wait (telegram-bot-api's `LONG_POLL_MAX_TIMEOUT`).
const MAX_TIMEOUT: f64 = 50.0;

pub(super) fn parse_get_updates(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    // Clamped as Telegram clamps it (the ingest allows for more).
    let timeout = number(params.get("timeout")).clamp(0.0, MAX_TIMEOUT);
    let offset = match number(params.get("offset")) as i64 {
        0 => None,
        n => Some(n),
    };
    // Given: clamped to 1..=100 (`0` and words are 1, as at Telegram); not given: 100.
    let limit = match params.get("limit") {
        None | Some(Value::Null) => 100,
        Some(Value::String(s)) if s.trim().is_empty() => 100,
        l => (number(l) as i64).clamp(1, 100) as usize,
    };
    let allowed_updates = allowed_updates(&params)?;
    let reader = params.get("reader").map(text).unwrap_or_default();
    let fine = reader.len() <= MAX_READER
        && reader
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !fine {
        return Err(bad(
            "reader must be up to 64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(Command::GetUpdates(GetUpdates {
        long_poll: timeout > 0.0,
        offset,
        limit,
        timeout: std::time::Duration::from_secs_f64(timeout),
        allowed_updates,
        reader,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::CallBody;

    fn call(method: &str, query: &str) -> Call {
        super::super::tests::call(method, query)
    }

    fn refused(query: &str) -> String {
        match parse_set(&call("setWebhook", query)) {
            Err(e) => e.description,
            Ok(c) => panic!("{query}: taken as {c:?}"),
        }
    }

    #[test]
    fn set_webhook_checks_its_parameters_before_anything_runs() {
        assert_eq!(
            refused("url=ftp://example.com/"),
            "Bad Request: bad webhook: an http:// or https:// URL must be provided for webhook"
        );
        assert!(refused("url=http://example.com/&secret_token=a%20b").contains("unallowed"));
        assert!(refused("url=http://example.com/&max_connections=0").contains("between 1"));
        assert!(refused("url=http://example.com/&max_connections=x").contains("between 1"));
        assert!(
            refused("url=http://example.com/&allowed_updates=%7B%7D").contains("allowed_updates")
        );
        let Ok(Command::SetWebhook(w)) = parse_set(&call(
            "setWebhook",
            "url=%20http://example.com:8080/hook%20&max_connections=7&allowed_updates=%5B%22message%22%5D&drop_pending_updates=true",
        )) else {
            panic!("a good setWebhook")
        };
        assert_eq!(w.url, "http://example.com:8080/hook");
        assert_eq!(w.max_connections, 7);
        assert_eq!(w.allowed_updates.as_deref(), Some(r#"["message"]"#));
        assert!(w.drop_pending_updates);
        assert_eq!(w.secret_token, None);
    }

    #[test]
    fn an_empty_url_deletes_and_long_polls_have_a_timeout() {
        assert_eq!(
            parse_set(&call("setWebhook", "url=&drop_pending_updates=1")).unwrap(),
            Command::DeleteWebhook(DeleteWebhook {
                drop_pending_updates: true,
                as_sent: false
            })
        );
        let polls = |q: &str, body: CallBody| {
            let mut c = call("getUpdates", q);
            c.body = body;
            matches!(
                parse_get_updates(&c),
                Ok(Command::GetUpdates(GetUpdates {
                    long_poll: true,
                    ..
                }))
            )
        };
        assert!(polls("timeout=30", CallBody::Empty));
        assert!(polls(
            "",
            CallBody::Json {
                value: serde_json::json!({"timeout": 5})
            }
        ));
        assert!(!polls("timeout=0", CallBody::Empty));
        assert!(!polls("", CallBody::Empty));
        assert!(!polls("timeout=soon", CallBody::Empty));
    }

    fn get_updates(query: &str) -> Result<GetUpdates, ApiError> {
        match parse_get_updates(&call("getUpdates", query))? {
            Command::GetUpdates(g) => Ok(g),
            other => panic!("{query}: taken as {other:?}"),
        }
    }

    #[test]
    fn get_updates_reads_its_parameters_as_telegram() {
        let g = get_updates("").unwrap();
        assert_eq!((g.offset, g.limit, g.reader.as_str()), (None, 100, ""));
        assert_eq!(g.timeout, std::time::Duration::ZERO);
        let g = get_updates("offset=-3&limit=500&timeout=25&reader=analytics-1").unwrap();
        assert_eq!((g.offset, g.limit), (Some(-3), 100));
        assert_eq!(g.timeout.as_secs(), 25);
        assert_eq!(g.reader, "analytics-1");
        assert_eq!(get_updates("limit=0").unwrap().limit, 1);
        assert_eq!(get_updates("limit=").unwrap().limit, 100);
        assert_eq!(get_updates("timeout=NaN").unwrap().timeout.as_secs(), 0);
        assert_eq!(get_updates("timeout=inf").unwrap().timeout.as_secs(), 0);
        assert_eq!(get_updates("timeout=3600").unwrap().timeout.as_secs(), 50);
        assert_eq!(get_updates("limit=7&offset=0").unwrap().limit, 7);
        assert_eq!(get_updates("offset=0").unwrap().offset, None);
        assert_eq!(
            get_updates("allowed_updates=%5B%22message%22%5D")
                .unwrap()
                .allowed_updates
                .as_deref(),
            Some(r#"["message"]"#)
        );
        assert!(get_updates("allowed_updates=%7B%7D").is_err());
        assert!(get_updates("reader=a%20b").is_err());
        assert!(get_updates(&format!("reader={}", "r".repeat(65))).is_err());
    }
}
