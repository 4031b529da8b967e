//! When a replayed answer is "the same" as the recorded one.
//!
//! The rule (also in README.md): the HTTP status must be equal, and the bodies, read as JSON,
//! must be equal once every field named in [`CHANGING`] is set aside at any depth — its value
//! is not compared, but a field present on one side must be present on the other. These are
//! what Telegram (or a sandbox) assigns afresh to every message and file: ids, dates and file
//! ids. A body that is not JSON must be equal byte for byte (by sha256).

use serde_json::Value;

/// Fields whose values always change between two runs of the same calls.
pub const CHANGING: &[&str] = &[
    "message_id",
    "date",
    "edit_date",
    "forward_date",
    "file_id",
    "file_unique_id",
    "file_path",
    "update_id",
];

/// At most this many differences are listed per call.
const MAX_LISTED: usize = 20;

/// The differences between a recorded and a replayed body (empty: the same), as
/// `path: recorded → replayed` lines.
pub fn differences(recorded: &[u8], replayed: &[u8]) -> Vec<String> {
    match (
        serde_json::from_slice::<Value>(recorded),
        serde_json::from_slice::<Value>(replayed),
    ) {
        (Ok(a), Ok(b)) => {
            let mut out = Vec::new();
            walk("", &a, &b, &mut out);
            out
        }
        _ if recorded == replayed => Vec::new(),
        _ => vec!["body: the bytes differ".into()],
    }
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let mut cut = 77;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if out.len() >= MAX_LISTED {
        return;
    }
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    None => out.push(format!("{}: {} → (absent)", at(k), short(va))),
                    Some(_) if CHANGING.contains(&k.as_str()) => {}
                    Some(vb) => walk(&at(k), va, vb, out),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(format!("{}: (absent) → {}", at(k), short(vb)));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                walk(&at(&i.to_string()), va, vb, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!(
            "{}: {} → {}",
            if path.is_empty() { "body" } else { path },
            short(a),
            short(b)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_dates_and_file_ids_are_set_aside() {
        let a = br#"{"ok":true,"result":{"message_id":1,"date":100,"chat":{"id":5},"text":"hi",
            "document":{"file_id":"AAA","file_unique_id":"u1","file_size":3}}}"#;
        let b = br#"{"ok":true,"result":{"message_id":9,"date":200,"chat":{"id":5},"text":"hi",
            "document":{"file_id":"BBB","file_unique_id":"u2","file_size":3}}}"#;
        assert!(differences(a, b).is_empty());
    }

    #[test]
    fn everything_else_is_compared() {
        let a = br#"{"ok":true,"result":{"message_id":1,"text":"hi","chat":{"id":5}}}"#;
        let b = br#"{"ok":true,"result":{"text":"ho","chat":{"id":6},"extra":[1]}}"#;
        let d = differences(a, b);
        assert_eq!(
            d,
            vec![
                "result.message_id: 1 → (absent)",
                r#"result.text: "hi" → "ho""#,
                "result.chat.id: 5 → 6",
                "result.extra: (absent) → [1]",
            ]
        );
        assert_eq!(
            differences(b"[1,2]", b"[1,2,3]"),
            vec!["body: [1,2] → [1,2,3]"]
        );
        assert!(differences(b"\x00\x01", b"\x00\x01").is_empty());
        assert_eq!(
            differences(b"\x00", b"\x01"),
            vec!["body: the bytes differ"]
        );
    }
}
