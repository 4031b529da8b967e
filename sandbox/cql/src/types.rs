//! CQL types: their names, protocol option ids, value checks, literals and sort order.
//!
//! Values are kept as the protocol encodes them (the bytes of a `[bytes]` cell); a type knows
//! how to check such bytes, how to make them from a literal of the query text, and how to turn
//! them into a key whose byte order is the type's CQL order.

use crate::parse::Literal;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Ascii,
    BigInt,
    Blob,
    Boolean,
    Counter,
    Double,
    Float,
    Int,
    Timestamp,
    Uuid,
    Text,
    TimeUuid,
    Inet,
    Date,
    SmallInt,
    TinyInt,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>, Box<Type>),
}

impl Type {
    /// A scalar type by its CQL name (`varchar` is `text`).
    pub fn scalar(name: &str) -> Option<Type> {
        Some(match name {
            "ascii" => Type::Ascii,
            "bigint" => Type::BigInt,
            "blob" => Type::Blob,
            "boolean" => Type::Boolean,
            "counter" => Type::Counter,
            "double" => Type::Double,
            "float" => Type::Float,
            "int" => Type::Int,
            "timestamp" => Type::Timestamp,
            "uuid" => Type::Uuid,
            "text" | "varchar" => Type::Text,
            "timeuuid" => Type::TimeUuid,
            "inet" => Type::Inet,
            "date" => Type::Date,
            "smallint" => Type::SmallInt,
            "tinyint" => Type::TinyInt,
            _ => return None,
        })
    }

    pub fn is_collection(&self) -> bool {
        matches!(self, Type::List(_) | Type::Set(_) | Type::Map(..))
    }

    /// The name `system_schema.columns.type` gives it.
    pub fn cql_name(&self) -> String {
        match self {
            Type::Ascii => "ascii".into(),
            Type::BigInt => "bigint".into(),
            Type::Blob => "blob".into(),
            Type::Boolean => "boolean".into(),
            Type::Counter => "counter".into(),
            Type::Double => "double".into(),
            Type::Float => "float".into(),
            Type::Int => "int".into(),
            Type::Timestamp => "timestamp".into(),
            Type::Uuid => "uuid".into(),
            Type::Text => "text".into(),
            Type::TimeUuid => "timeuuid".into(),
            Type::Inet => "inet".into(),
            Type::Date => "date".into(),
            Type::SmallInt => "smallint".into(),
            Type::TinyInt => "tinyint".into(),
            Type::List(e) => format!("list<{}>", e.cql_name()),
            Type::Set(e) => format!("set<{}>", e.cql_name()),
            Type::Map(k, v) => format!("map<{}, {}>", k.cql_name(), v.cql_name()),
        }
    }

    /// The `[option]` of a column spec.
    pub fn write_option(&self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            Type::Ascii => 0x01,
            Type::BigInt => 0x02,
            Type::Blob => 0x03,
            Type::Boolean => 0x04,
            Type::Counter => 0x05,
            Type::Double => 0x07,
            Type::Float => 0x08,
            Type::Int => 0x09,
            Type::Timestamp => 0x0B,
            Type::Uuid => 0x0C,
            Type::Text => 0x0D,
            Type::TimeUuid => 0x0F,
            Type::Inet => 0x10,
            Type::Date => 0x11,
            Type::SmallInt => 0x13,
            Type::TinyInt => 0x14,
            Type::List(_) => 0x20,
            Type::Map(..) => 0x21,
            Type::Set(_) => 0x22,
        };
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            Type::List(e) | Type::Set(e) => e.write_option(out),
            Type::Map(k, v) => {
                k.write_option(out);
                v.write_option(out);
            }
            _ => {}
        }
    }

    fn fixed_len(&self) -> Option<usize> {
        Some(match self {
            Type::BigInt | Type::Counter | Type::Timestamp | Type::Double => 8,
            Type::Int | Type::Float | Type::Date => 4,
            Type::SmallInt => 2,
            Type::TinyInt | Type::Boolean => 1,
            Type::Uuid | Type::TimeUuid => 16,
            _ => return None,
        })
    }

    /// Checks a value sent for this type (the message is the server's reason).
    pub fn validate(&self, v: &[u8]) -> Result<(), String> {
        if let Some(n) = self.fixed_len() {
            // An empty value is legal CQL for every fixed-size type.
            if v.len() != n && !v.is_empty() {
                return Err(format!(
                    "Expected {n} or 0 byte value for {} ({})",
                    self.cql_name(),
                    v.len()
                ));
            }
            if *self == Type::TimeUuid && v.len() == 16 && v[6] >> 4 != 1 {
                return Err("Unsupported UUID version for timeuuid".into());
            }
            return Ok(());
        }
        match self {
            Type::Text => std::str::from_utf8(v)
                .map(|_| ())
                .map_err(|_| "Invalid UTF-8 bytes for text".to_string()),
            Type::Ascii => {
                if v.is_ascii() {
                    Ok(())
                } else {
                    Err("Invalid byte for ascii".into())
                }
            }
            Type::Inet => match v.len() {
                0 | 4 | 16 => Ok(()),
                n => Err(format!("Invalid length for an inet address ({n})")),
            },
            Type::List(e) | Type::Set(e) => {
                for item in elements(v, 1)? {
                    e.validate(item[0])?;
                }
                Ok(())
            }
            Type::Map(k, val) => {
                for item in elements(v, 2)? {
                    k.validate(item[0])?;
                    val.validate(item[1])?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Bytes whose lexicographic order is this type's CQL order.
    pub fn order_key(&self, v: &[u8]) -> Vec<u8> {
        match self {
            Type::BigInt
            | Type::Counter
            | Type::Timestamp
            | Type::Int
            | Type::SmallInt
            | Type::TinyInt
            | Type::Date
                if !v.is_empty() =>
            {
                // Two's complement with the sign bit flipped sorts as unsigned.
                let mut k = v.to_vec();
                if *self != Type::Date {
                    k[0] ^= 0x80;
                }
                let mut out = vec![1];
                out.extend(k);
                out
            }
            Type::Double | Type::Float if !v.is_empty() => {
                let mut k = v.to_vec();
                if k[0] & 0x80 != 0 {
                    k.iter_mut().for_each(|b| *b = !*b);
                } else {
                    k[0] ^= 0x80;
                }
                let mut out = vec![1];
                out.extend(k);
                out
            }
            Type::Uuid | Type::TimeUuid if v.len() == 16 => {
                // Cassandra's UUIDType: by version, then time-based ones by their time.
                let version = v[6] >> 4;
                let mut out = vec![1];
                if *self == Type::Uuid {
                    out.push(version);
                }
                if version == 1 {
                    let hi = u64::from(u16::from_be_bytes([v[6] & 0x0f, v[7]]));
                    let mid = u64::from(u16::from_be_bytes([v[4], v[5]]));
                    let lo = u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                    out.extend(((hi << 48) | (mid << 32) | lo).to_be_bytes());
                }
                out.extend_from_slice(v);
                out
            }
            // An empty value sorts first.
            _ if v.is_empty() => vec![0],
            _ => {
                let mut out = vec![1];
                out.extend_from_slice(v);
                out
            }
        }
    }

    /// The value a literal of the query text stands for, as `col` of this type.
    pub fn encode(&self, lit: &Literal, col: &str) -> Result<Vec<u8>, String> {
        let invalid = |kind: &str, text: &str| {
            format!(
                "Invalid {kind} constant ({text}) for \"{col}\" of type {}",
                self.cql_name()
            )
        };
        match (self, lit) {
            (Type::Text | Type::Ascii, Literal::Str(s)) => {
                let v = s.as_bytes().to_vec();
                self.validate(&v)?;
                Ok(v)
            }
            (Type::Uuid | Type::TimeUuid, Literal::Uuid(u)) => {
                self.validate(u)?;
                Ok(u.to_vec())
            }
            (Type::Inet, Literal::Str(s)) => match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) => Ok(a.octets().to_vec()),
                Ok(std::net::IpAddr::V6(a)) => Ok(a.octets().to_vec()),
                Err(_) => Err(format!("Unable to make inet address from '{s}'")),
            },
            (Type::Boolean, Literal::Bool(b)) => Ok(vec![u8::from(*b)]),
            (Type::Blob, Literal::Hex(b)) => Ok(b.clone()),
            (Type::BigInt | Type::Counter | Type::Timestamp, Literal::Int(i)) => i64::try_from(*i)
                .map(|i| i.to_be_bytes().to_vec())
                .map_err(|_| invalid("INTEGER", &i.to_string())),
            (Type::Int, Literal::Int(i)) => i32::try_from(*i)
                .map(|i| i.to_be_bytes().to_vec())
                .map_err(|_| invalid("INTEGER", &i.to_string())),
            (Type::SmallInt, Literal::Int(i)) => i16::try_from(*i)
                .map(|i| i.to_be_bytes().to_vec())
                .map_err(|_| invalid("INTEGER", &i.to_string())),
            (Type::TinyInt, Literal::Int(i)) => i8::try_from(*i)
                .map(|i| i.to_be_bytes().to_vec())
                .map_err(|_| invalid("INTEGER", &i.to_string())),
            (Type::Double, Literal::Int(i)) => Ok((*i as f64).to_be_bytes().to_vec()),
            (Type::Double, Literal::Float(f)) => Ok(f.to_be_bytes().to_vec()),
            (Type::Float, Literal::Int(i)) => Ok((*i as f32).to_be_bytes().to_vec()),
            (Type::Float, Literal::Float(f)) => Ok((*f as f32).to_be_bytes().to_vec()),
            (Type::List(e), Literal::List(items)) | (Type::Set(e), Literal::Set(items)) => {
                let mut cells = Vec::new();
                for item in items {
                    cells.push(e.encode(item, col)?);
                }
                if matches!(self, Type::Set(_)) {
                    cells.sort_by_key(|c| e.order_key(c));
                    cells.dedup();
                }
                Ok(collection(cells.iter().map(|c| vec![c.as_slice()])))
            }
            (Type::Set(_), Literal::Map(m)) | (Type::List(_), Literal::Map(m)) if m.is_empty() => {
                Ok(0i32.to_be_bytes().to_vec())
            }
            (Type::Map(k, v), Literal::Map(entries)) => {
                let mut cells = Vec::new();
                for (key, val) in entries {
                    cells.push((k.encode(key, col)?, v.encode(val, col)?));
                }
                cells.sort_by_key(|c| k.order_key(&c.0));
                Ok(collection(
                    cells.iter().map(|(a, b)| vec![a.as_slice(), b.as_slice()]),
                ))
            }
            (Type::Map(..), Literal::Set(s)) if s.is_empty() => Ok(0i32.to_be_bytes().to_vec()),
            (_, lit) => Err(invalid(lit.kind(), &lit.to_string())),
        }
    }
}

/// A collection's cells: `[int n]` then n items of `per` `[int len][bytes]` each.
pub fn collection<'a>(items: impl ExactSizeIterator<Item = Vec<&'a [u8]>>) -> Vec<u8> {
    let mut out = (items.len() as i32).to_be_bytes().to_vec();
    for item in items {
        for cell in item {
            out.extend_from_slice(&(cell.len() as i32).to_be_bytes());
            out.extend_from_slice(cell);
        }
    }
    out
}

/// The items of an encoded collection, `per` cells each (2 for a map).
pub fn elements(v: &[u8], per: usize) -> Result<Vec<Vec<&[u8]>>, String> {
    let bad = || "Malformed collection value".to_string();
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = v.get(*pos..*pos + n).ok_or_else(bad)?;
        *pos += n;
        Ok(s)
    };
    let mut pos = 0;
    let n = i32::from_be_bytes(take(&mut pos, 4)?.try_into().map_err(|_| bad())?);
    if n < 0 {
        return Err(bad());
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let mut item = Vec::with_capacity(per);
        for _ in 0..per {
            let len = i32::from_be_bytes(take(&mut pos, 4)?.try_into().map_err(|_| bad())?);
            if len < 0 {
                return Err("null is not supported inside collections".into());
            }
            item.push(take(&mut pos, len as usize)?);
        }
        out.push(item);
    }
    if pos != v.len() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sort_by_value() {
        let k = |i: i64| Type::BigInt.order_key(&i.to_be_bytes());
        assert!(k(-5) < k(-1) && k(-1) < k(0) && k(0) < k(7) && k(7) < k(i64::MAX));
        let d = |f: f64| Type::Double.order_key(&f.to_be_bytes());
        assert!(d(-2.5) < d(-1.0) && d(-1.0) < d(0.0) && d(0.0) < d(3.5));
    }

    #[test]
    fn values_are_checked() {
        assert!(Type::BigInt.validate(&[0; 4]).is_err());
        assert!(Type::BigInt.validate(&[0; 8]).is_ok());
        assert!(Type::Text.validate(&[0xff]).is_err());
        assert!(Type::Int
            .encode(&Literal::Str("x".into()), "c")
            .unwrap_err()
            .contains("Invalid STRING constant (x) for \"c\" of type int"));
        let set = Type::Set(Box::new(Type::Text))
            .encode(
                &Literal::Set(vec![Literal::Str("b".into()), Literal::Str("a".into())]),
                "c",
            )
            .unwrap();
        let items = elements(&set, 1).unwrap();
        assert_eq!(items, vec![vec![b"a".as_slice()], vec![b"b".as_slice()]]);
    }
}
