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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "encoding", rename_all = "snake_case")]
pub enum BodyBytes {
    /// Exactly one JSON value, byte for byte (almost every Bot API answer): kept as JSON in
    /// the record, so it is neither escaped when written nor unescaped when read. Schema 2.
    Json { json: RawJson },
    /// Valid UTF-8, kept readable for audit.
    Utf8 { text: String },
    /// Anything else that is small.
    Base64 { data: String },
    /// Too large to inline.
    Blob { blob: BlobRef },
}

/// A JSON value as its exact text.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl RawJson {
    /// `bytes` when they are exactly one JSON value, with nothing around it (the body must
    /// come back byte for byte, and a JSON reader would drop surrounding whitespace).
    pub fn exact(bytes: &[u8]) -> Option<Self> {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_slice(bytes).ok()?;
        (raw.get().len() == bytes.len()).then_some(Self(raw))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl<'de> Deserialize<'de> for BodyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::tagged::decode(d)
    }
}

impl crate::tagged::Tagged for BodyBytes {
    const TAG: &'static str = "encoding";
    const EXPECTING: &'static str = "a body (json, utf8, base64 or blob)";

    fn variant<'de, A: serde::de::MapAccess<'de>>(
        variant: &str,
        fields: serde::de::value::MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error> {
        #[derive(Deserialize)]
        struct Json {
            json: RawJson,
        }
        #[derive(Deserialize)]
        struct Text {
            text: String,
        }
        #[derive(Deserialize)]
        struct Data {
            data: String,
        }
        #[derive(Deserialize)]
        struct Blob {
            blob: BlobRef,
        }
        Ok(match variant {
            "json" => BodyBytes::Json {
                json: Json::deserialize(fields)?.json,
            },
            "utf8" => BodyBytes::Utf8 {
                text: Text::deserialize(fields)?.text,
            },
            "base64" => BodyBytes::Base64 {
                data: Data::deserialize(fields)?.data,
            },
            "blob" => BodyBytes::Blob {
                blob: Blob::deserialize(fields)?.blob,
            },
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["json", "utf8", "base64", "blob"],
                ))
            }
        })
    }
}

impl BodyBytes {
    /// Inline encoding of bytes; the caller decides whether they are small enough.
    pub fn inline(bytes: &[u8]) -> Self {
        if let Some(json) = RawJson::exact(bytes) {
            return BodyBytes::Json { json };
        }
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
            BodyBytes::Json { json } => Some(Cow::Borrowed(json.get().as_bytes())),
            BodyBytes::Utf8 { text } => Some(Cow::Borrowed(text.as_bytes())),
            BodyBytes::Base64 { data } => STANDARD.decode(data).ok().map(Cow::Owned),
            BodyBytes::Blob { .. } => None,
        }
    }

    /// The bytes of an inline body, taken rather than copied (an answer on its way to the
    /// bot); `None` for a blob reference.
    pub fn into_inline_bytes(self) -> Option<Vec<u8>> {
        match self {
            BodyBytes::Json { json } => Some(String::from(Box::<str>::from(json.0)).into_bytes()),
            BodyBytes::Utf8 { text } => Some(text.into_bytes()),
            BodyBytes::Base64 { data } => STANDARD.decode(data).ok(),
            BodyBytes::Blob { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body comes back byte for byte, through a record too; JSON is kept as JSON only
    /// when it is exactly one value with nothing around it.
    #[test]
    fn inline_roundtrip() {
        let bodies: [&[u8]; 7] = [
            br#"{"ok":true,"result":{"text":"a \"quote\" \u00e9"}}"#,
            b"{\"ok\":true}\n",
            b" [1, 2]",
            b"not json",
            &[0xff, 0x00, 0x80],
            b"",
            b"{\"a\":1}{\"b\":2}",
        ];
        for b in bodies {
            let body = BodyBytes::inline(b);
            assert_eq!(body.inline_bytes().unwrap().as_ref(), b);
            let back: BodyBytes =
                serde_json::from_slice(&serde_json::to_vec(&body).unwrap()).unwrap();
            assert_eq!(back, body);
            assert_eq!(back.inline_bytes().unwrap().as_ref(), b);
            assert_eq!(back.into_inline_bytes().unwrap(), b);
        }
        assert!(matches!(
            BodyBytes::inline(bodies[0]),
            BodyBytes::Json { .. }
        ));
        assert!(matches!(
            BodyBytes::inline(bodies[1]),
            BodyBytes::Utf8 { .. }
        ));
        assert!(matches!(
            BodyBytes::inline(bodies[2]),
            BodyBytes::Utf8 { .. }
        ));
    }
}
