//! Decoding internally tagged enums (`{"kind": "json", "value": ...}`) without serde's detour.
//!
//! serde's derived `#[serde(tag = ...)]` decoding buffers the whole object into an
//! intermediate tree before it knows the variant, then decodes the variant from that tree:
//! every string copied twice, a node allocated per value. On the hot path that was a third of
//! what decoding a record cost (`bench/README.md`). Records put the tag first (serde writes it
//! first), so these decoders read it, then decode the variant's fields straight from the
//! input. An object whose tag comes later (written by hand, say) is buffered as JSON, put in
//! order and read again: the same values decode as before, only slower.
//!
//! Encoding stays derived; the golden files pin that both agree.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// What a tagged enum tells [`decode`]: its tag's name, and how to read a variant's fields.
pub(crate) trait Tagged: Sized {
    const TAG: &'static str;
    const EXPECTING: &'static str;

    /// Reads the fields of `variant` from the rest of the object.
    fn variant<'de, A: MapAccess<'de>>(
        variant: &str,
        fields: MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error>;
}

/// Decodes a [`Tagged`] enum (call it from its `Deserialize` impl).
pub(crate) fn decode<'de, T: Tagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TaggedVisitor::<T>(std::marker::PhantomData))
}

/// For variants without fields: the rest of the object, ignored (as serde's derive does).
pub(crate) fn unit<'de, A: MapAccess<'de>, T>(
    fields: MapAccessDeserializer<A>,
    value: T,
) -> Result<T, A::Error> {
    IgnoredAny::deserialize(fields)?;
    Ok(value)
}

struct TaggedVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Err(A::Error::missing_field(T::TAG));
        };
        if first.0 == T::TAG {
            let variant = map.next_value::<Key>()?;
            return T::variant(&variant.0, MapAccessDeserializer::new(map));
        }
        // The tag is not first: gather the object, put the tag first, read it again.
        let mut rest = serde_json::Map::new();
        rest.insert(first.0, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            rest.insert(k, v);
        }
        let tag = rest
            .remove(T::TAG)
            .ok_or_else(|| A::Error::missing_field(T::TAG))?;
        let mut ordered = serde_json::Map::with_capacity(rest.len() + 1);
        ordered.insert(T::TAG.to_owned(), tag);
        ordered.extend(rest);
        serde_json::Value::Object(ordered)
            .deserialize_map(self)
            .map_err(A::Error::custom)
    }
}

/// A key or tag value, borrowed from the input when it can be.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use crate::{BodyBytes, CallBody, Part};

    /// Tag first (as written), tag later (by hand), extra fields, and the errors serde's own
    /// derive gives: an unknown variant, a missing tag.
    #[test]
    fn reads_the_tag_wherever_it_is() {
        let first: CallBody =
            serde_json::from_str(r#"{"kind":"form","pairs":[["a","1"]]}"#).unwrap();
        let later: CallBody =
            serde_json::from_str(r#"{"pairs":[["a","1"]],"extra":{"x":[1]},"kind":"form"}"#)
                .unwrap();
        assert_eq!(first, later);
        assert_eq!(
            first,
            CallBody::Form {
                pairs: vec![("a".into(), "1".into())]
            }
        );
        let empty: CallBody = serde_json::from_str(r#"{"kind":"empty","x":1}"#).unwrap();
        assert_eq!(empty, CallBody::Empty);
        let body: BodyBytes =
            serde_json::from_str(r#"{"text":"{\"ok\":true}","encoding":"utf8"}"#).unwrap();
        assert_eq!(body.inline_bytes().unwrap().as_ref(), br#"{"ok":true}"#);
        let part: Part = serde_json::from_str(r#"{"kind":"text","name":"n","value":"v"}"#).unwrap();
        assert_eq!(
            part,
            Part::Text {
                name: "n".into(),
                value: "v".into()
            }
        );
        let unknown = serde_json::from_str::<CallBody>(r#"{"kind":"xml"}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown variant `xml`"),
            "{unknown}"
        );
        let missing = serde_json::from_str::<BodyBytes>(r#"{"text":"x"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `encoding`"),
            "{missing}"
        );
        assert!(serde_json::from_str::<BodyBytes>(r#"{"encoding":"utf8"}"#).is_err());
    }

    /// What the derive writes, these read back, for every variant.
    #[test]
    fn roundtrips_every_variant() {
        let blob = crate::BlobRef {
            sha256: "ab".repeat(32),
            size: 3,
            key: "k".into(),
        };
        let bodies = [
            CallBody::Empty,
            CallBody::Json {
                value: serde_json::json!({"chat_id": 1, "nested": {"a": [1, 2]}}),
            },
            CallBody::Form {
                pairs: vec![("text".into(), "hé \"quoted\"".into())],
            },
            CallBody::Multipart {
                parts: vec![
                    Part::Text {
                        name: "chat_id".into(),
                        value: "5".into(),
                    },
                    Part::File {
                        name: "document".into(),
                        file_name: Some("a.pdf".into()),
                        content_type: None,
                        blob: blob.clone(),
                    },
                ],
            },
            CallBody::Other {
                content_type: "text/plain".into(),
                data: BodyBytes::Base64 {
                    data: "AAE=".into(),
                },
            },
            CallBody::Other {
                content_type: "x/y".into(),
                data: BodyBytes::Blob { blob },
            },
        ];
        for b in bodies {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(
                serde_json::from_str::<CallBody>(&json).unwrap(),
                b,
                "{json}"
            );
        }
    }
}
