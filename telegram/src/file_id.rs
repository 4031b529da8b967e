//! Bot API `file_id` and `file_unique_id` in tdlib's format (see
//! `td/telegram/files/FileManager.cpp`).
//!
//! `file_id = base64url(zero_rle(payload) ‖ minor ‖ major)`, payload little-endian TL:
//! `i32 type_flags, i32 dc_id, [bytes file_reference], i64 id, i64 access_hash, ...`.
//! `file_unique_id = base64url(zero_rle(i32 kind ‖ key))`.
//! This module encodes and decodes the document-like types and new-style photos; the rest of
//! tdlib's variants come with the full codec.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub const MAJOR: u8 = 4;
/// tdlib's version at encoding time (early 2026).
pub const MINOR: u8 = 56;
const HAS_REFERENCE: i32 = 1 << 25;
const WEB: i32 = 1 << 24;

/// tdlib's file types that the sandbox issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Photo = 2,
    Voice = 3,
    Video = 4,
    Document = 5,
    Sticker = 8,
    Audio = 9,
    Animation = 10,
    VideoNote = 13,
}

impl FileType {
    fn from_i32(v: i32) -> Option<Self> {
        use FileType::*;
        Some(match v {
            2 => Photo,
            3 => Voice,
            4 => Video,
            5 => Document,
            8 => Sticker,
            9 => Audio,
            10 => Animation,
            13 => VideoNote,
            _ => return None,
        })
    }

    /// The Bot API name of the type.
    pub fn name(&self) -> &'static str {
        use FileType::*;
        match self {
            Photo => "photo",
            Voice => "voice",
            Video => "video",
            Document => "document",
            Sticker => "sticker",
            Audio => "audio",
            Animation => "animation",
            VideoNote => "video_note",
        }
    }

    /// tdlib's unique-id kind: photos 1, documents 2.
    fn unique_kind(&self) -> i32 {
        match self {
            FileType::Photo => 1,
            _ => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileId {
    pub file_type: FileType,
    pub dc_id: i32,
    pub file_reference: Vec<u8>,
    pub id: i64,
    pub access_hash: i64,
    /// For photos: the size letter of a thumbnail source (`'x'`, `'y'`, ...).
    pub photo_size: Option<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileIdError {
    #[error("wrong file identifier: not base64url")]
    Base64,
    #[error("wrong file identifier: unsupported version")]
    Version,
    #[error("wrong file identifier: truncated or trailing data")]
    Length,
    #[error("wrong file identifier: unsupported file type {0}")]
    Type(i32),
}

fn zero_rle(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0u8;
    for &b in data {
        if b == 0 {
            zeros += 1;
            if zeros == 250 {
                out.extend_from_slice(&[0, zeros]);
                zeros = 0;
            }
        } else {
            if zeros > 0 {
                out.extend_from_slice(&[0, zeros]);
                zeros = 0;
            }
            out.push(b);
        }
    }
    if zeros > 0 {
        out.extend_from_slice(&[0, zeros]);
    }
    out
}

fn zero_unrle(data: &[u8]) -> Result<Vec<u8>, FileIdError> {
    let mut out = Vec::with_capacity(data.len() * 2);
    let mut i = 0;
    while i < data.len() {
        if data[i] == 0 {
            let n = *data.get(i + 1).ok_or(FileIdError::Length)?;
            out.extend(std::iter::repeat_n(0u8, n as usize));
            i += 2;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn tl_bytes(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 254 {
        out.push(b.len() as u8);
        out.extend_from_slice(b);
        let pad = (4 - (b.len() + 1) % 4) % 4;
        out.extend(std::iter::repeat_n(0u8, pad));
    } else {
        out.push(254);
        out.extend_from_slice(&(b.len() as u32).to_le_bytes()[..3]);
        out.extend_from_slice(b);
        let pad = (4 - b.len() % 4) % 4;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FileIdError> {
        if self.0.len() < n {
            return Err(FileIdError::Length);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i32(&mut self) -> Result<i32, FileIdError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, FileIdError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, FileIdError> {
        let first = self.take(1)?[0] as usize;
        let (len, header) = if first < 254 {
            (first, 1)
        } else {
            let l = self.take(3)?;
            (
                l[0] as usize | (l[1] as usize) << 8 | (l[2] as usize) << 16,
                4,
            )
        };
        let v = self.take(len)?.to_vec();
        self.take((4 - (len + header) % 4) % 4)?;
        Ok(v)
    }
}

impl FileId {
    pub fn encode(&self) -> String {
        let mut p = Vec::new();
        let mut flags = self.file_type as i32;
        if !self.file_reference.is_empty() {
            flags |= HAS_REFERENCE;
        }
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&self.dc_id.to_le_bytes());
        if !self.file_reference.is_empty() {
            tl_bytes(&mut p, &self.file_reference);
        }
        p.extend_from_slice(&self.id.to_le_bytes());
        p.extend_from_slice(&self.access_hash.to_le_bytes());
        if self.file_type == FileType::Photo {
            // PhotoSizeSource::Thumbnail { file_type: photo, thumb_type }
            p.extend_from_slice(&1i32.to_le_bytes());
            p.extend_from_slice(&(FileType::Photo as i32).to_le_bytes());
            p.extend_from_slice(&(self.photo_size.unwrap_or(b'x') as i32).to_le_bytes());
        }
        let mut out = zero_rle(&p);
        out.push(MINOR);
        out.push(MAJOR);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decode(s: &str) -> Result<Self, FileIdError> {
        let raw = URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| FileIdError::Base64)?;
        if raw.len() < 2 || raw[raw.len() - 1] != MAJOR {
            return Err(FileIdError::Version);
        }
        let minor = raw[raw.len() - 2];
        let payload = zero_unrle(&raw[..raw.len() - 2])?;
        let mut r = Reader(&payload);
        let flags = r.i32()?;
        if flags & WEB != 0 {
            return Err(FileIdError::Type(flags));
        }
        let t = flags & 0xff_ffff;
        let file_type = FileType::from_i32(t).ok_or(FileIdError::Type(t))?;
        let dc_id = r.i32()?;
        let file_reference = if flags & HAS_REFERENCE != 0 {
            r.bytes()?
        } else {
            Vec::new()
        };
        let id = r.i64()?;
        let access_hash = r.i64()?;
        let mut photo_size = None;
        if file_type == FileType::Photo {
            if minor < 32 {
                return Err(FileIdError::Version);
            }
            let variant = r.i32()?;
            if variant != 1 {
                return Err(FileIdError::Type(variant));
            }
            r.i32()?;
            photo_size = Some(r.i32()? as u8);
        }
        if !r.0.is_empty() {
            return Err(FileIdError::Length);
        }
        Ok(Self {
            file_type,
            dc_id,
            file_reference,
            id,
            access_hash,
            photo_size,
        })
    }

    /// The `file_unique_id`: the same for every bot and every reference to this file.
    pub fn unique_id(&self) -> String {
        let mut p = Vec::new();
        p.extend_from_slice(&self.file_type.unique_kind().to_le_bytes());
        p.extend_from_slice(&self.id.to_le_bytes());
        if self.file_type == FileType::Photo {
            let t = self.photo_size.unwrap_or(b'x');
            p.push(match t {
                b'a' => 0,
                b'c' => 1,
                other => other + 5,
            });
        }
        URL_SAFE_NO_PAD.encode(zero_rle(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mtcute's vector: a v4.31 document, dc 2, with a file reference.
    #[test]
    fn decodes_a_public_test_vector() {
        let id = FileId::decode(
            "BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8E",
        )
        .unwrap();
        assert_eq!(id.file_type, FileType::Document);
        assert_eq!(id.dc_id, 2);
        assert_eq!(id.id, 5213102278772264052);
        assert_eq!(id.access_hash, -4610306729174144868);
        assert_eq!(
            hex_of(&id.file_reference),
            "0100099f33608add34203b0a774ece75279a9f0cfca2c79c60"
        );
        assert_eq!(id.unique_id(), "AgADdAwAAueoWEg");
    }

    #[test]
    fn roundtrips_every_issued_type() {
        for t in [
            FileType::Photo,
            FileType::Voice,
            FileType::Video,
            FileType::Document,
            FileType::Sticker,
            FileType::Audio,
            FileType::Animation,
            FileType::VideoNote,
        ] {
            let id = FileId {
                file_type: t,
                dc_id: 4,
                file_reference: vec![1, 0, 0, 0, 7],
                id: -42,
                access_hash: 0x0102030400000000,
                photo_size: (t == FileType::Photo).then_some(b'y'),
            };
            assert_eq!(FileId::decode(&id.encode()).unwrap(), id);
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(FileId::decode("***"), Err(FileIdError::Base64));
        assert_eq!(FileId::decode("AAAA"), Err(FileIdError::Version));
        assert!(FileId::decode(
            "BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8"
        )
        .is_err());
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
