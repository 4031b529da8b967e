//! Records on the bus and the vocabulary every telepipe crate shares.
//!
//! Everything that crosses a process boundary (a bus record, a stored row's payload) is
//! defined here, versioned, and pinned by golden files in `golden/`. This crate depends on no
//! other crate of ours.
//!
//! # Layout
//! - [`ids`]: `CallId`, `BotId` newtypes.
//! - [`token`]: the bot token, its shape check, and the only place it is ever held in clear.
//! - [`seal`]: AEAD sealing of tokens under the cluster key, token fingerprints.
//! - [`envelope`]: `Envelope { header, payload }`, schema versions, decoding that refuses to guess.
//! - [`call`], [`response`]: the payloads of the `calls` and `responses` topics.
//! - [`body`]: byte bodies inline or by blob reference (records stay small).
//! - [`error`]: Bot API-shaped errors, the one place that maps an error to JSON and status.
//! - [`catalogue`]: the official Bot API method names (from `api.json`).

pub mod body;
pub mod call;
pub mod catalogue;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod mask;
pub mod media;
pub mod response;
pub mod seal;
pub mod staged;
mod tagged;
pub mod token;
pub mod update;

pub use body::{BlobRef, BodyBytes};
pub use call::{
    Call, CallBody, CallCancelled, Encoding, FloodTurn, Part, RecordedRequest, RecordedRequestError,
};
pub use envelope::{
    DecodeError, Envelope, Header, Payload, RecordKind, OLDEST_READ, SCHEMA_VERSION,
};
pub use error::{ApiError, ResponseParameters, UnknownOutcome};
pub use ids::{BotId, CallId};
pub use media::MediaKind;
pub use response::{Origin, Response, Stages};
pub use seal::{Purpose, SealError, SealKey, SealedToken, Sealer, TokenFingerprint};
pub use staged::{FoundFile, Staged, StagedItem};
pub use token::{BotToken, TokenError};
pub use update::{Update, UpdateSource, UpdatesKept};

/// The bot's username in a getMe answer: `result.username` as Bot API 10.1 has it, or that of
/// an object one level down carrying the bot's id (later versions answer a fuller object —
/// BotFullInfo in 10.5 — that may hold the user within). `bot`: the id the answer must be of.
pub fn me_username(answer: &serde_json::Value, bot: i64) -> Option<&str> {
    let result = &answer["result"];
    let candidates = std::iter::once(result).chain(
        result
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|v| v.is_object()),
    );
    for v in candidates {
        if v["id"].as_i64() == Some(bot) {
            if let Some(u) = v["username"].as_str().filter(|u| valid_username(u)) {
                return Some(u);
            }
        }
    }
    None
}

/// Telegram usernames: 4–32 of `[A-Za-z0-9_]` (bots' are longer; 4 admits old collectibles).
/// Storage paths start with one, so a path's first segment never looks like anything else.
pub fn valid_username(u: &str) -> bool {
    (4..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Milliseconds since the Unix epoch, the one clock format used in records.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usernames_are_checked() {
        assert!(super::valid_username("sandbox42_bot"));
        assert!(!super::valid_username("a/b"));
        assert!(!super::valid_username("official:1"));
        assert!(!super::valid_username("abc"));
    }
}

#[cfg(test)]
mod me_tests {
    use serde_json::json;

    /// The username is read from 10.1's User and from a fuller object holding the user.
    #[test]
    fn get_me_answers_old_and_new() {
        let old = json!({"ok": true, "result": {"id": 7, "is_bot": true, "username": "echo_bot"}});
        assert_eq!(super::me_username(&old, 7), Some("echo_bot"));
        assert_eq!(super::me_username(&old, 8), None, "another bot's answer");
        let new = json!({"ok": true, "result": {"user": {"id": 7, "is_bot": true,
            "username": "echo_bot"}, "description": "d", "can_join_groups": true}});
        assert_eq!(super::me_username(&new, 7), Some("echo_bot"));
        let bad = json!({"ok": true, "result": {"id": 7, "username": "a b"}});
        assert_eq!(super::me_username(&bad, 7), None);
        assert_eq!(super::me_username(&json!({"ok": false}), 7), None);
    }
}
