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
pub mod media;
pub mod response;
pub mod seal;
mod tagged;
pub mod token;
pub mod update;

pub use body::{BlobRef, BodyBytes};
pub use call::{Call, CallBody, Encoding, Part, RecordedRequest, RecordedRequestError};
pub use envelope::{
    DecodeError, Envelope, Header, Payload, RecordKind, OLDEST_READ, SCHEMA_VERSION,
};
pub use error::{ApiError, ResponseParameters};
pub use ids::{BotId, CallId};
pub use response::{Origin, Response, Stages};
pub use seal::{Purpose, SealError, SealKey, SealedToken, Sealer, TokenFingerprint};
pub use token::{BotToken, TokenError};
pub use update::{Update, UpdateSource};

/// Milliseconds since the Unix epoch, the one clock format used in records.
/// Telegram usernames: 4–32 of `[A-Za-z0-9_]` (bots' are longer; 4 admits old collectibles).
/// Storage paths start with one, so a path's first segment never looks like anything else.
pub fn valid_username(u: &str) -> bool {
    (4..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

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
