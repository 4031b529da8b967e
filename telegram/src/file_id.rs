//! Bot API `file_id` and `file_unique_id` in tdlib's format (the reference is tdlib's
//! `FileManager.cpp`, `FileLocation.h`, `PhotoSizeSource.h`).
//!
//! `file_id = base64url(zero_rle(payload) ‖ minor ‖ major)` (major 2 ids have no minor byte).
//! The payload is little-endian TL: `i32 type | web flag | reference flag`, `i32 dc_id`, the
//! file reference if flagged, then the location: a web URL and access hash; or for photos
//! `i64 id, i64 access_hash` and a [`PhotoSizeSource`] (whose encoding depends on the minor
//! version); or for everything else `i64 id, i64 access_hash`. The payload must be consumed
//! exactly. `file_unique_id = base64url(zero_rle(i32 kind ‖ key))`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

/// The major version written today.
pub const MAJOR: u8 = 4;
/// tdlib's version at encoding time (early 2026); ids are written with it.
pub const MINOR: u8 = 56;
const WEB: i32 = 1 << 24;
const HAS_REFERENCE: i32 = 1 << 25;
/// From this minor version on, photo locations carry their size source in the modern form.
const PHOTO_SOURCE_ONLY: u8 = 32;
/// From this minor version on, legacy photo locations carry a size source at all.
const PHOTO_SOURCE_ADDED: u8 = 22;

/// tdlib's file types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Thumbnail = 0,
    ProfilePhoto = 1,
    Photo = 2,
    Voice = 3,
    Video = 4,
    Document = 5,
    Encrypted = 6,
    Temp = 7,
    Sticker = 8,
    Audio = 9,
    Animation = 10,
    EncryptedThumbnail = 11,
    Wallpaper = 12,
    VideoNote = 13,
    SecureDecrypted = 14,
    SecureEncrypted = 15,
    Background = 16,
    DocumentAsFile = 17,
    Ringtone = 18,
    CallLog = 19,
    PhotoStory = 20,
    VideoStory = 21,
    SelfDestructingPhoto = 22,
    SelfDestructingVideo = 23,
    SelfDestructingVideoNote = 24,
    SelfDestructingVoiceNote = 25,
}

impl FileType {
    pub fn from_i32(v: i32) -> Option<Self> {
        use FileType::*;
        const ALL: [FileType; 26] = [
            Thumbnail,
            ProfilePhoto,
            Photo,
            Voice,
            Video,
            Document,
            Encrypted,
            Temp,
            Sticker,
            Audio,
            Animation,
            EncryptedThumbnail,
            Wallpaper,
            VideoNote,
            SecureDecrypted,
            SecureEncrypted,
            Background,
            DocumentAsFile,
            Ringtone,
            CallLog,
            PhotoStory,
            VideoStory,
            SelfDestructingPhoto,
            SelfDestructingVideo,
            SelfDestructingVideoNote,
            SelfDestructingVoiceNote,
        ];
        usize::try_from(v).ok().and_then(|i| ALL.get(i).copied())
    }

    /// The Bot API's name for what a file of this type is sent as.
    pub fn name(&self) -> &'static str {
        use FileType::*;
        match self {
            Thumbnail => "thumbnail",
            ProfilePhoto => "profile_photo",
            Photo | SelfDestructingPhoto | PhotoStory => "photo",
            Voice | SelfDestructingVoiceNote => "voice",
            Video | SelfDestructingVideo | VideoStory => "video",
            Document | DocumentAsFile => "document",
            Sticker => "sticker",
            Audio => "audio",
            Animation => "animation",
            VideoNote | SelfDestructingVideoNote => "video_note",
            Wallpaper | Background => "background",
            Ringtone => "ringtone",
            Encrypted | EncryptedThumbnail => "encrypted",
            SecureDecrypted | SecureEncrypted => "passport",
            Temp => "temp",
            CallLog => "call_log",
        }
    }

    /// What a file_id of this type is sent as: the kind whose send method takes it.
    pub fn sent_as(&self) -> schemas::MediaKind {
        use schemas::MediaKind as K;
        use FileType::*;
        match self {
            t if t.is_photo() => K::Photo,
            Video => K::Video,
            Audio => K::Audio,
            Voice => K::Voice,
            Animation => K::Animation,
            VideoNote => K::VideoNote,
            Sticker => K::Sticker,
            _ => K::Document,
        }
    }

    /// Whether a location of this type is a photo location (with a size source).
    pub fn is_photo(&self) -> bool {
        use FileType::*;
        matches!(
            self,
            Thumbnail
                | ProfilePhoto
                | Photo
                | EncryptedThumbnail
                | Wallpaper
                | PhotoStory
                | SelfDestructingPhoto
        )
    }

    /// tdlib's file type class plus one: the first word of a unique id.
    fn unique_kind(&self) -> i32 {
        use FileType::*;
        match self {
            _ if self.is_photo() => 1,
            SecureDecrypted | SecureEncrypted => 3,
            Encrypted => 4,
            Temp => 5,
            _ => 2,
        }
    }
}

/// Where a photo file's size comes from (tdlib's `PhotoSizeSource`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum PhotoSizeSource {
    /// Variant 0, only inside legacy ids.
    Legacy { secret: i64 },
    /// Variant 1: a size (`thumb_type` is its letter, `'x'`, `'m'`, ...) of a photo or document.
    Thumbnail { file_type: i32, thumb_type: i32 },
    /// Variants 2 and 3.
    DialogPhoto {
        big: bool,
        dialog_id: i64,
        dialog_access_hash: i64,
    },
    /// Variant 4.
    StickerSetThumbnail { set_id: i64, set_access_hash: i64 },
    /// Variant 5.
    FullLegacy {
        volume_id: i64,
        secret: i64,
        local_id: i32,
    },
    /// Variants 6 and 7.
    DialogPhotoLegacy {
        big: bool,
        dialog_id: i64,
        dialog_access_hash: i64,
        volume_id: i64,
        local_id: i32,
    },
    /// Variant 8.
    StickerSetThumbnailLegacy {
        set_id: i64,
        set_access_hash: i64,
        volume_id: i64,
        local_id: i32,
    },
    /// Variant 9.
    StickerSetThumbnailVersion {
        set_id: i64,
        set_access_hash: i64,
        version: i32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Web {
        url: String,
        access_hash: i64,
    },
    Photo {
        id: i64,
        access_hash: i64,
        source: PhotoSizeSource,
    },
    Common {
        id: i64,
        access_hash: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileId {
    pub file_type: FileType,
    pub dc_id: i32,
    /// Empty when the id carries none.
    pub file_reference: Vec<u8>,
    pub location: Location,
    /// (major, minor) the id was written with; 2 ids have minor 0.
    pub version: (u8, u8),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileIdError {
    #[error("not base64url")]
    Base64,
    #[error("unsupported version")]
    Version,
    #[error("truncated or with trailing data")]
    Length,
    #[error("unknown file type {0}")]
    Type(i32),
    #[error("unknown photo size source {0}")]
    Source(i32),
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

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        let header = if b.len() < 254 {
            self.0.push(b.len() as u8);
            1
        } else {
            self.0.push(254);
            self.0
                .extend_from_slice(&(b.len() as u32).to_le_bytes()[..3]);
            4
        };
        self.0.extend_from_slice(b);
        self.0
            .extend(std::iter::repeat_n(0u8, (4 - (b.len() + header) % 4) % 4));
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

impl PhotoSizeSource {
    fn read(r: &mut Reader<'_>) -> Result<Self, FileIdError> {
        use PhotoSizeSource::*;
        Ok(match r.i32()? {
            0 => Legacy { secret: r.i64()? },
            1 => Thumbnail {
                file_type: r.i32()?,
                thumb_type: r.i32()?,
            },
            v @ (2 | 3) => DialogPhoto {
                big: v == 3,
                dialog_id: r.i64()?,
                dialog_access_hash: r.i64()?,
            },
            4 => StickerSetThumbnail {
                set_id: r.i64()?,
                set_access_hash: r.i64()?,
            },
            5 => FullLegacy {
                volume_id: r.i64()?,
                secret: r.i64()?,
                local_id: r.i32()?,
            },
            v @ (6 | 7) => DialogPhotoLegacy {
                big: v == 7,
                dialog_id: r.i64()?,
                dialog_access_hash: r.i64()?,
                volume_id: r.i64()?,
                local_id: r.i32()?,
            },
            8 => StickerSetThumbnailLegacy {
                set_id: r.i64()?,
                set_access_hash: r.i64()?,
                volume_id: r.i64()?,
                local_id: r.i32()?,
            },
            9 => StickerSetThumbnailVersion {
                set_id: r.i64()?,
                set_access_hash: r.i64()?,
                version: r.i32()?,
            },
            other => return Err(FileIdError::Source(other)),
        })
    }

    fn write(&self, w: &mut Writer) {
        use PhotoSizeSource::*;
        match *self {
            Legacy { secret } => {
                w.i32(0);
                w.i64(secret);
            }
            Thumbnail {
                file_type,
                thumb_type,
            } => {
                w.i32(1);
                w.i32(file_type);
                w.i32(thumb_type);
            }
            DialogPhoto {
                big,
                dialog_id,
                dialog_access_hash,
            } => {
                w.i32(if big { 3 } else { 2 });
                w.i64(dialog_id);
                w.i64(dialog_access_hash);
            }
            StickerSetThumbnail {
                set_id,
                set_access_hash,
            } => {
                w.i32(4);
                w.i64(set_id);
                w.i64(set_access_hash);
            }
            FullLegacy {
                volume_id,
                secret,
                local_id,
            } => {
                w.i32(5);
                w.i64(volume_id);
                w.i64(secret);
                w.i32(local_id);
            }
            DialogPhotoLegacy {
                big,
                dialog_id,
                dialog_access_hash,
                volume_id,
                local_id,
            } => {
                w.i32(if big { 7 } else { 6 });
                w.i64(dialog_id);
                w.i64(dialog_access_hash);
                w.i64(volume_id);
                w.i32(local_id);
            }
            StickerSetThumbnailLegacy {
                set_id,
                set_access_hash,
                volume_id,
                local_id,
            } => {
                w.i32(8);
                w.i64(set_id);
                w.i64(set_access_hash);
                w.i64(volume_id);
                w.i32(local_id);
            }
            StickerSetThumbnailVersion {
                set_id,
                set_access_hash,
                version,
            } => {
                w.i32(9);
                w.i64(set_id);
                w.i64(set_access_hash);
                w.i32(version);
            }
        }
    }

    /// A pre-32 source with the volume and local id that stood beside it, in modern form.
    fn with_legacy_location(self, volume_id: i64, local_id: i32) -> Self {
        use PhotoSizeSource::*;
        match self {
            Legacy { secret } => FullLegacy {
                volume_id,
                secret,
                local_id,
            },
            DialogPhoto {
                big,
                dialog_id,
                dialog_access_hash,
            } => DialogPhotoLegacy {
                big,
                dialog_id,
                dialog_access_hash,
                volume_id,
                local_id,
            },
            StickerSetThumbnail {
                set_id,
                set_access_hash,
            } => StickerSetThumbnailLegacy {
                set_id,
                set_access_hash,
                volume_id,
                local_id,
            },
            other => other,
        }
    }
}

impl FileId {
    /// A document-like file id of the current version.
    pub fn common(
        file_type: FileType,
        dc_id: i32,
        file_reference: Vec<u8>,
        id: i64,
        access_hash: i64,
    ) -> Self {
        Self {
            file_type,
            dc_id,
            file_reference,
            location: Location::Common { id, access_hash },
            version: (MAJOR, MINOR),
        }
    }

    /// A photo size (`thumb` is its letter, e.g. `b'y'`) of the current version.
    pub fn photo(
        dc_id: i32,
        file_reference: Vec<u8>,
        id: i64,
        access_hash: i64,
        thumb: u8,
    ) -> Self {
        Self {
            file_type: FileType::Photo,
            dc_id,
            file_reference,
            location: Location::Photo {
                id,
                access_hash,
                source: PhotoSizeSource::Thumbnail {
                    file_type: FileType::Photo as i32,
                    thumb_type: thumb as i32,
                },
            },
            version: (MAJOR, MINOR),
        }
    }

    /// The media id and access hash (zero for web files).
    pub fn id(&self) -> (i64, i64) {
        match &self.location {
            Location::Common { id, access_hash }
            | Location::Photo {
                id, access_hash, ..
            } => (*id, *access_hash),
            Location::Web { access_hash, .. } => (0, *access_hash),
        }
    }

    pub fn decode(s: &str) -> Result<Self, FileIdError> {
        let raw = URL_SAFE_NO_PAD
            .decode(s.trim().as_bytes())
            .map_err(|_| FileIdError::Base64)?;
        let (body, version) = match raw.last() {
            Some(&MAJOR) if raw.len() >= 2 => (&raw[..raw.len() - 2], (MAJOR, raw[raw.len() - 2])),
            Some(&2) => (&raw[..raw.len() - 1], (2, 0)),
            _ => return Err(FileIdError::Version),
        };
        let payload = zero_unrle(body)?;
        let mut r = Reader(&payload);
        let flags = r.i32()?;
        let raw_type = flags & !(WEB | HAS_REFERENCE);
        let file_type = FileType::from_i32(raw_type).ok_or(FileIdError::Type(raw_type))?;
        let dc_id = r.i32()?;
        let file_reference = if flags & HAS_REFERENCE != 0 {
            r.bytes()?
        } else {
            Vec::new()
        };
        let location = if flags & WEB != 0 {
            let url = String::from_utf8(r.bytes()?).map_err(|_| FileIdError::Length)?;
            Location::Web {
                url,
                access_hash: r.i64()?,
            }
        } else if file_type.is_photo() {
            let id = r.i64()?;
            let access_hash = r.i64()?;
            let minor = version.1;
            let source = if version.0 == MAJOR && minor >= PHOTO_SOURCE_ONLY {
                PhotoSizeSource::read(&mut r)?
            } else {
                let volume_id = r.i64()?;
                if version.0 == MAJOR && minor >= PHOTO_SOURCE_ADDED {
                    let source = PhotoSizeSource::read(&mut r)?;
                    let local_id = r.i32()?;
                    source.with_legacy_location(volume_id, local_id)
                } else {
                    let secret = r.i64()?;
                    let local_id = r.i32()?;
                    PhotoSizeSource::FullLegacy {
                        volume_id,
                        secret,
                        local_id,
                    }
                }
            };
            Location::Photo {
                id,
                access_hash,
                source,
            }
        } else {
            Location::Common {
                id: r.i64()?,
                access_hash: r.i64()?,
            }
        };
        if !r.0.is_empty() {
            return Err(FileIdError::Length);
        }
        Ok(Self {
            file_type,
            dc_id,
            file_reference,
            location,
            version,
        })
    }

    /// The id in today's format (ids decoded from older versions are upgraded).
    pub fn encode(&self) -> String {
        let mut w = Writer::default();
        let mut flags = self.file_type as i32;
        if matches!(self.location, Location::Web { .. }) {
            flags |= WEB;
        }
        if !self.file_reference.is_empty() {
            flags |= HAS_REFERENCE;
        }
        w.i32(flags);
        w.i32(self.dc_id);
        if !self.file_reference.is_empty() {
            w.bytes(&self.file_reference);
        }
        match &self.location {
            Location::Web { url, access_hash } => {
                w.bytes(url.as_bytes());
                w.i64(*access_hash);
            }
            Location::Photo {
                id,
                access_hash,
                source,
            } => {
                w.i64(*id);
                w.i64(*access_hash);
                source.write(&mut w);
            }
            Location::Common { id, access_hash } => {
                w.i64(*id);
                w.i64(*access_hash);
            }
        }
        let mut out = zero_rle(&w.0);
        out.push(self.version.1.max(PHOTO_SOURCE_ONLY));
        out.push(MAJOR);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The `file_unique_id`: the same for every bot and every reference to this file.
    pub fn unique_id(&self) -> String {
        let mut w = Writer::default();
        match &self.location {
            Location::Web { url, .. } => {
                w.i32(0);
                w.bytes(url.as_bytes());
            }
            Location::Common { id, .. } => {
                w.i32(self.file_type.unique_kind());
                w.i64(*id);
            }
            Location::Photo { id, source, .. } => {
                w.i32(self.file_type.unique_kind());
                use PhotoSizeSource::*;
                match source {
                    Legacy { .. } => w.i64(*id),
                    FullLegacy {
                        volume_id,
                        local_id,
                        ..
                    }
                    | DialogPhotoLegacy {
                        volume_id,
                        local_id,
                        ..
                    }
                    | StickerSetThumbnailLegacy {
                        volume_id,
                        local_id,
                        ..
                    } => {
                        w.i64(*volume_id);
                        w.i32(*local_id);
                    }
                    Thumbnail { thumb_type, .. } => {
                        w.i64(*id);
                        w.0.push(match *thumb_type as u8 {
                            b'a' => 0,
                            b'c' => 1,
                            t => t.wrapping_add(5),
                        });
                    }
                    DialogPhoto { big, .. } => {
                        w.i64(*id);
                        w.0.push(u8::from(*big));
                    }
                    StickerSetThumbnail { set_id, .. } => w.i64(*set_id),
                    StickerSetThumbnailVersion {
                        set_id, version, ..
                    } => {
                        w.0.push(2);
                        w.i64(*set_id);
                        w.i32(*version);
                    }
                }
            }
        }
        URL_SAFE_NO_PAD.encode(zero_rle(&w.0))
    }

    /// Everything the id holds, for `telepipe file-id`.
    pub fn describe(&self, original: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "file_id": original,
            "type": self.file_type,
            "dc_id": self.dc_id,
            "file_reference": hex(&self.file_reference),
            "version": format!("{}.{}", self.version.0, self.version.1),
            "file_unique_id": self.unique_id(),
        });
        match &self.location {
            Location::Web { url, access_hash } => {
                v["url"] = url.clone().into();
                v["access_hash"] = (*access_hash).into();
            }
            Location::Common { id, access_hash } => {
                v["id"] = (*id).into();
                v["access_hash"] = (*access_hash).into();
            }
            Location::Photo {
                id,
                access_hash,
                source,
            } => {
                v["id"] = (*id).into();
                v["access_hash"] = (*access_hash).into();
                v["photo_size_source"] = serde_json::to_value(source).unwrap_or_default();
            }
        }
        v
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(id: &str) -> (FileType, i32, String, i64, i64) {
        let f = FileId::decode(id).unwrap();
        let Location::Common { id, access_hash } = f.location else {
            panic!("not common: {f:?}")
        };
        (
            f.file_type,
            f.dc_id,
            hex(&f.file_reference),
            id,
            access_hash,
        )
    }

    // Vectors with their decoded fields from mtcute's packages/file-id tests (which take some
    // from luckydonald/telegram_file_id).

    #[test]
    fn decodes_common_ids() {
        assert_eq!(
            common("CAACAgIAAxkBAAEJny9gituz1_V_uSKBUuG_nhtzEtFOeQACXFoAAuCjggfYjw_KAAGSnkgfBA"),
            (
                FileType::Sticker,
                2,
                "0100099f2f608adbb3d7f57fb9228152e1bf9e1b7312d14e79".into(),
                541175087705905756,
                5232780349138767832
            )
        );
        assert_eq!(
            common("BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8E"),
            (
                FileType::Document,
                2,
                "0100099f33608add34203b0a774ece75279a9f0cfca2c79c60".into(),
                5213102278772264052,
                -4610306729174144868
            )
        );
        // An old major-2 id without a file reference.
        assert_eq!(
            common("CAADAQADegAD997LEUiQZafDlhIeAg"),
            (
                FileType::Sticker,
                1,
                String::new(),
                1282363671355326586,
                2166960137789870152
            )
        );
    }

    #[test]
    fn decodes_thumbnails_and_legacy_dialog_photos() {
        let t = FileId::decode("AAMCAgADGQEAAQmfL2CK27PX9X-5IoFS4b-eG3MS0U55AAJcWgAC4KOCB9iPD8oAAZKeSK1c8w4ABAEAB20AA1kCAAIfBA").unwrap();
        assert_eq!(t.file_type, FileType::Thumbnail);
        assert_eq!(
            t.location,
            Location::Photo {
                id: 541175087705905756,
                access_hash: 5232780349138767832,
                source: PhotoSizeSource::Thumbnail {
                    file_type: FileType::Thumbnail as i32,
                    thumb_type: b'm' as i32
                },
            }
        );
        let big = FileId::decode("AQADAgATqfDdly4AAwMAA4siCOX_____AAhKowIAAR4E").unwrap();
        assert_eq!(big.file_type, FileType::ProfilePhoto);
        assert!(big.file_reference.is_empty());
        assert_eq!(
            big.location,
            Location::Photo {
                id: 0,
                access_hash: 0,
                source: PhotoSizeSource::DialogPhotoLegacy {
                    big: true,
                    dialog_id: -452451701,
                    dialog_access_hash: 0,
                    volume_id: 200116400297,
                    local_id: 172874
                },
            }
        );
        let channel =
            FileId::decode("AQADAgATySHBDgAEAgAD0npI3Bb___-wfxjpg7QCPf0pBQABHwQ").unwrap();
        assert_eq!(
            channel.location,
            Location::Photo {
                id: 0,
                access_hash: 0,
                source: PhotoSizeSource::DialogPhotoLegacy {
                    big: false,
                    dialog_id: -1001326609710,
                    dialog_access_hash: 4396274664911437744,
                    volume_id: 247538121,
                    local_id: 338429
                },
            }
        );
    }

    #[test]
    fn unique_ids_match_the_vectors() {
        for (id, unique) in [
            ("CAADAQADegAD997LEUiQZafDlhIeAg", "AgADegAD997LEQ"),
            ("CAACAgEAAx0CVgtngQACAuFfU1GY9wiRG7A7jlIBbP2yvAostAACegAD997LEUiQZafDlhIeGwQ", "AgADegAD997LEQ"),
            ("BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8E", "AgADdAwAAueoWEg"),
            ("AAMCAgADGQEAAQmfM2CK3TQgOwp3Ts51J5qfDPyix5xgAAJ0DAAC56hYSJxo-8105gTAT_bYoy4AAwEAB20AA0JBAAIfBA", "AQADdAwAAueoWEhy"),
            ("CAACAgIAAxkBAAEJny9gituz1_V_uSKBUuG_nhtzEtFOeQACXFoAAuCjggfYjw_KAAGSnkgfBA", "AgADXFoAAuCjggc"),
            ("AQADAgATySHBDgAEAwAD0npI3Bb___-wfxjpg7QCPf8pBQABHwQ", "AQADySHBDgAE_ykFAAE"),
            ("AQADAgATySHBDgAEAgAD0npI3Bb___-wfxjpg7QCPf0pBQABHwQ", "AQADySHBDgAE_SkFAAE"),
        ] {
            assert_eq!(FileId::decode(id).unwrap().unique_id(), unique, "{id}");
        }
    }

    #[test]
    fn encoding_roundtrips_and_upgrades() {
        // A current-version id comes back identical.
        let id = "BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8E";
        let f = FileId::decode(id).unwrap();
        let again = FileId::decode(&f.encode()).unwrap();
        assert_eq!(again.location, f.location);
        assert_eq!(again.file_reference, f.file_reference);
        // Legacy ids are upgraded to the modern layout and keep their meaning.
        for old in [
            "AQADAgATqfDdly4AAwMAA4siCOX_____AAhKowIAAR4E",
            "AAMCAgADGQEAAQmfL2CK27PX9X-5IoFS4b-eG3MS0U55AAJcWgAC4KOCB9iPD8oAAZKeSK1c8w4ABAEAB20AA1kCAAIfBA",
            "CAADAQADegAD997LEUiQZafDlhIeAg",
        ] {
            let f = FileId::decode(old).unwrap();
            let up = FileId::decode(&f.encode()).unwrap();
            assert_eq!((up.file_type, up.dc_id, &up.location), (f.file_type, f.dc_id, &f.location), "{old}");
            assert_eq!(up.unique_id(), f.unique_id(), "{old}");
        }
        // Web files.
        let web = FileId {
            file_type: FileType::Photo,
            dc_id: 0,
            file_reference: Vec::new(),
            location: Location::Web {
                url: "https://example.com/a.jpg".into(),
                access_hash: 7,
            },
            version: (MAJOR, MINOR),
        };
        assert_eq!(FileId::decode(&web.encode()).unwrap(), web);
    }

    #[test]
    fn issued_ids_roundtrip() {
        let doc = FileId::common(
            FileType::Video,
            4,
            vec![1, 0, 0, 0, 7],
            -42,
            0x0102030400000000,
        );
        assert_eq!(FileId::decode(&doc.encode()).unwrap(), doc);
        let photo = FileId::photo(2, vec![1, 2], 99, -1, b'y');
        assert_eq!(FileId::decode(&photo.encode()).unwrap(), photo);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(FileId::decode("***"), Err(FileIdError::Base64));
        assert_eq!(FileId::decode("AAAA"), Err(FileIdError::Version));
        assert!(FileId::decode(
            "BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8"
        )
        .is_err());
        assert!(FileId::decode("").is_err());
        // Every prefix of a valid id fails cleanly, never panics.
        let id = "AQADAgATySHBDgAEAgAD0npI3Bb___-wfxjpg7QCPf0pBQABHwQ";
        for n in 0..id.len() {
            let _ = FileId::decode(&id[..n]);
        }
    }
}
