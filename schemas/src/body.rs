//! Byte bodies in records: inline while small, by blob reference when large (invariant 4).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Bodies above this size go to the blob store instead of into a record.
pub const INLINE_LIMIT: usize = 256 * 1024;

/// A content-addressed blob: the key is derived from the sha256, so the same bytes are stored
/// once whoever sends them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    pub size: u64,
    /// Where the blob store keeps it (`sha256/ab/cd/<sha256>`).
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "encoding", rename_all = "snake_case")]
pub enum BodyBytes {
    /// Valid UTF-8, kept readable for audit (almost every Bot API answer).
    Utf8 { text: String },
    /// Anything else that is small.
    Base64 { data: String },
    /// Too large to inline.
    Blob { blob: BlobRef },
}

impl BodyBytes {
    /// Inline encoding of bytes; the caller decides whether they are small enough.
    pub fn inline(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => BodyBytes::Utf8 { text: s.to_owned() },
            Err(_) => BodyBytes::Base64 {
                data: STANDARD.encode(bytes),
            },
        }
    }

    /// The bytes of an inline body; `None` for a blob reference (read it from the blob store).
    pub fn inline_bytes(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            BodyBytes::Utf8 { text } => Some(Cow::Borrowed(text.as_bytes())),
            BodyBytes::Base64 { data } => STANDARD.decode(data).ok().map(Cow::Owned),
            BodyBytes::Blob { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_roundtrip() {
        for b in [&b"{\"ok\":true}"[..], &[0xff, 0x00, 0x80][..], &[][..]] {
            assert_eq!(BodyBytes::inline(b).inline_bytes().unwrap().as_ref(), b);
        }
    }
}
