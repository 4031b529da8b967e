//! No bot token in clear on the bus. A bot may put its own token in a call (a webhook URL that
//! carries it, a message quoting it) and an answer may echo it; the token itself travels sealed.
//! Before a call is published the ingest replaces the token's secret wherever it appears in
//! the query and the body with the call's mark ([`crate::seal::Sealer::token_mark`]), and the
//! processor puts it back after opening the sealed token; answers travel the other way (the
//! processor marks, the ingest restores). File parts (blobs) are not looked into.
//!
//! The secret and the mark are both `[A-Za-z0-9_-]`: neither needs escaping in a query string,
//! a form or JSON, so a replacement never changes how the text around it is encoded.

use crate::body::{BodyBytes, RawJson};
use crate::call::{Call, CallBody, Part};
use crate::envelope::Envelope;
use crate::response::Response;
use crate::seal::Sealer;
use serde_json::Value;

/// The call as its bot sent it, when the ingest marked it: the mark replaced by the token's
/// secret again, opened from the call's sealed token. `None` when there is no mark (or the
/// token does not open): the call is as it came.
pub fn unmasked(sealer: &Sealer, env: &Envelope<Call>) -> Option<Call> {
    // Most calls carry no mark: one look for the prefix before the HMAC.
    if !call_contains(&env.payload, MARK_PREFIX) {
        return None;
    }
    let mark = sealer.token_mark(env.header.call_id);
    if !call_contains(&env.payload, &mark) {
        return None;
    }
    let token = sealer
        .open(env.header.bot_id, env.payload.token.as_ref()?)
        .ok()?;
    let (_, secret) = token.expose().split_once(':')?;
    let mut call = env.payload.clone();
    replace_in_call(&mut call, &mark, secret);
    Some(call)
}

/// The reverse of [`unmasked`], for a call a processing stage hands on to the next: the
/// token's secret, wherever the call (or what the stages found for it) carries it, replaced
/// by the call's mark again. The call stays as it is when its token does not open.
pub fn remask(sealer: &Sealer, env: &mut Envelope<Call>) {
    let Some(token) = env
        .payload
        .token
        .as_ref()
        .and_then(|t| sealer.open(env.header.bot_id, t).ok())
    else {
        return;
    };
    let Some((_, secret)) = token.expose().split_once(':') else {
        return;
    };
    if call_contains(&env.payload, secret) {
        let mark = sealer.token_mark(env.header.call_id);
        replace_in_call(&mut env.payload, secret, &mark);
    }
}

/// An answer on its way onto the bus: the call's token secret, if the answer echoes it,
/// replaced by the call's mark.
pub fn mark_answer(sealer: &Sealer, env: &Envelope<Call>, response: &mut Response) {
    let Some(sealed) = env.payload.token.as_ref() else {
        return;
    };
    if matches!(
        response.body,
        BodyBytes::Base64 { .. } | BodyBytes::Blob { .. }
    ) {
        return;
    }
    let Ok(token) = sealer.open(env.header.bot_id, sealed) else {
        return;
    };
    if let Some((_, secret)) = token.expose().split_once(':') {
        if body_contains(&response.body, secret) {
            replace_in_response(response, secret, &sealer.token_mark(env.header.call_id));
        }
    }
}

/// Replaces `from` by `to` in the call's query and body (and the name of a file the stages
/// found for it); whether anything was replaced.
pub fn replace_in_call(call: &mut Call, from: &str, to: &str) -> bool {
    if from.is_empty() {
        return false;
    }
    let mut changed = replace_text(&mut call.query, from, to);
    match &mut call.body {
        CallBody::Empty => {}
        CallBody::Json { value } => changed |= replace_value(value, from, to),
        CallBody::Form { pairs } => {
            for (_, v) in pairs {
                changed |= replace_text(v, from, to);
            }
        }
        CallBody::Multipart { parts } => {
            for part in parts {
                if let Part::Text { value, .. } = part {
                    changed |= replace_text(value, from, to);
                }
            }
        }
        CallBody::Other { data, .. } => changed |= replace_body(data, from, to),
    }
    // A fetched file's name comes from its URL, which may carry the token.
    if let Some(staged) = call.staged.as_mut() {
        for file in staged.files_mut() {
            changed |= replace_text(&mut file.file_name, from, to);
        }
    }
    changed
}

/// Whether `needle` is anywhere `replace_in_call` looks (read only: it runs on every call).
pub fn call_contains(call: &Call, needle: &str) -> bool {
    fn in_value(v: &Value, needle: &str) -> bool {
        match v {
            Value::String(s) => s.contains(needle),
            Value::Array(a) => a.iter().any(|v| in_value(v, needle)),
            Value::Object(m) => m.values().any(|v| in_value(v, needle)),
            _ => false,
        }
    }
    if needle.is_empty() {
        return false;
    }
    call.query.contains(needle)
        || match &call.body {
            CallBody::Empty => false,
            CallBody::Json { value } => in_value(value, needle),
            CallBody::Form { pairs } => pairs.iter().any(|(_, v)| v.contains(needle)),
            CallBody::Multipart { parts } => parts
                .iter()
                .any(|p| matches!(p, Part::Text { value, .. } if value.contains(needle))),
            CallBody::Other { data, .. } => body_contains(data, needle),
        }
        || call
            .staged
            .as_ref()
            .is_some_and(|s| s.files().any(|f| f.file_name.contains(needle)))
}

/// Whether `needle` is in the body's text (JSON or UTF-8; binary bodies are not looked into).
pub fn body_contains(body: &BodyBytes, needle: &str) -> bool {
    match body {
        BodyBytes::Json { json } => json.0.get().contains(needle),
        BodyBytes::Utf8 { text } => text.contains(needle),
        BodyBytes::Base64 { .. } | BodyBytes::Blob { .. } => false,
    }
}

/// The prefix of every mark: an answer without it has nothing to restore.
pub const MARK_PREFIX: &str = "tpmask";

/// Replaces `from` by `to` in the answer's body; whether anything was replaced.
pub fn replace_in_response(response: &mut Response, from: &str, to: &str) -> bool {
    !from.is_empty() && replace_body(&mut response.body, from, to)
}

fn replace_text(s: &mut String, from: &str, to: &str) -> bool {
    if s.contains(from) {
        *s = s.replace(from, to);
        return true;
    }
    false
}

fn replace_value(v: &mut Value, from: &str, to: &str) -> bool {
    match v {
        Value::String(s) => replace_text(s, from, to),
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, v| replace_value(v, from, to) | acc),
        Value::Object(m) => m
            .values_mut()
            .fold(false, |acc, v| replace_value(v, from, to) | acc),
        _ => false,
    }
}

fn replace_body(body: &mut BodyBytes, from: &str, to: &str) -> bool {
    match body {
        BodyBytes::Json { json } => {
            let text = json.0.get();
            if !text.contains(from) {
                return false;
            }
            // Both strings are plain `[A-Za-z0-9_-]`: the JSON stays valid, byte for byte
            // elsewhere.
            match serde_json::value::RawValue::from_string(text.replace(from, to)) {
                Ok(raw) => {
                    *json = RawJson(raw);
                    true
                }
                Err(_) => false,
            }
        }
        BodyBytes::Utf8 { text } => replace_text(text, from, to),
        // Binary bodies and blobs are forwarded untouched.
        BodyBytes::Base64 { .. } | BodyBytes::Blob { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{Origin, Stages};

    fn call(body: CallBody) -> Call {
        Call {
            token: None,
            token_fingerprint: crate::seal::TokenFingerprint("f".into()),
            test_env: false,
            method: "setWebhook".into(),
            http_method: "POST".into(),
            query: "url=https://h/SECRET_x-1/hook&x=1".into(),
            body,
            deadline_ms: 0,
            rejected: None,
            staged: None,
        }
    }

    #[test]
    fn the_secret_goes_out_and_comes_back() {
        let secret = "SECRET_x-1";
        for body in [
            CallBody::Json {
                value: serde_json::json!({"url": "https://h/SECRET_x-1/hook", "n": [1, "SECRET_x-1"]}),
            },
            CallBody::Form {
                pairs: vec![("text".into(), "token SECRET_x-1".into())],
            },
            CallBody::Multipart {
                parts: vec![Part::Text {
                    name: "text".into(),
                    value: "SECRET_x-1".into(),
                }],
            },
        ] {
            let original = call(body);
            let mut c = original.clone();
            assert!(replace_in_call(&mut c, secret, "tpmaskabc"));
            let text = serde_json::to_string(&c).unwrap();
            assert!(!text.contains(secret), "{text}");
            assert!(call_contains(&c, "tpmaskabc"));
            assert!(replace_in_call(&mut c, "tpmaskabc", secret));
            assert_eq!(c, original);
        }
        let mut plain = call(CallBody::Empty);
        plain.query = "chat_id=1".into();
        assert!(!replace_in_call(&mut plain, secret, "m"));
        assert!(!call_contains(&plain, "tpmaskabc"));

        // The name of a file fetched for the call (from its URL) between the file stages.
        plain.staged = Some(Box::new(crate::staged::Staged {
            file: Some(crate::staged::FoundFile {
                blob: crate::body::BlobRef {
                    sha256: "0".repeat(64),
                    size: 1,
                    key: "k".into(),
                },
                file_name: "SECRET_x-1".into(),
                content_type: None,
            }),
            ..Default::default()
        }));
        assert!(call_contains(&plain, secret));
        assert!(replace_in_call(&mut plain, secret, "tpmaskabc"));
        assert!(!serde_json::to_string(&plain).unwrap().contains(secret));
        assert!(call_contains(&plain, "tpmaskabc"));
    }

    #[test]
    fn a_call_handed_on_is_marked_again_as_the_ingest_marked_it() {
        let sealer = Sealer::new(&crate::seal::SealKey::generate());
        let token =
            crate::token::BotToken::parse("123456:AAsecret-part_xyz0123456789abcdefghij").unwrap();
        let mut c = call(CallBody::Empty);
        c.token = Some(sealer.seal(&token));
        let id = crate::ids::CallId::new();
        let mark = sealer.token_mark(id);
        c.query = format!("text=mine {mark}");
        let masked = Envelope::new(id, crate::ids::BotId(123456), "ingest/t", None, c);
        let mut onward = masked.clone();
        onward.payload = unmasked(&sealer, &masked).expect("the mark undone");
        assert!(onward
            .payload
            .query
            .contains("AAsecret-part_xyz0123456789abcdefghij"));
        remask(&sealer, &mut onward);
        assert_eq!(onward, masked);
        // Nothing to mark: left as it is.
        remask(&sealer, &mut onward);
        assert_eq!(onward, masked);
    }

    #[test]
    fn answers_are_marked_in_their_text() {
        let raw = br#"{"ok":true,"result":{"url":"https://h/SECRET/hook"}}"#;
        let mut r = Response {
            status: 200,
            content_type: None,
            body: BodyBytes::inline(raw),
            origin: Origin::Upstream,
            stages: Stages::default(),
        };
        assert!(replace_in_response(&mut r, "SECRET", "tpmaskabc"));
        assert!(!serde_json::to_string(&r).unwrap().contains("SECRET"));
        assert!(replace_in_response(&mut r, "tpmaskabc", "SECRET"));
        assert_eq!(r.body.inline_bytes().unwrap(), raw.as_slice());
    }
}
