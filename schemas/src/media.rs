//! Media types of files by their names, for serving stored files with a useful
//! `Content-Type` when Telegram gave a generic one.

/// The media type of a lowercase file extension, when it is a common one.
pub fn mime_by_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "json" => "application/json",
        "zip" => "application/zip",
        "tgs" => "application/x-tgsticker",
        _ => return None,
    })
}

/// The media type for a file name, if its extension is known.
pub fn mime_for_name(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    mime_by_extension(&ext.to_ascii_lowercase())
}

/// The kinds of file a message carries, as the Bot API names them: one name each for a send
/// method's file parameter, an `InputMedia`'s `type` and a stored file's kind. Every table of
/// the gateway that maps a kind to a method or a parameter goes through this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Photo,
    Video,
    Animation,
    Audio,
    Voice,
    VideoNote,
    Sticker,
    Document,
}

impl MediaKind {
    pub const ALL: [MediaKind; 8] = [
        MediaKind::Photo,
        MediaKind::Video,
        MediaKind::Animation,
        MediaKind::Audio,
        MediaKind::Voice,
        MediaKind::VideoNote,
        MediaKind::Sticker,
        MediaKind::Document,
    ];

    /// The send method's file parameter (also the `type` of an `InputMedia`).
    pub fn param(self) -> &'static str {
        match self {
            MediaKind::Photo => "photo",
            MediaKind::Video => "video",
            MediaKind::Animation => "animation",
            MediaKind::Audio => "audio",
            MediaKind::Voice => "voice",
            MediaKind::VideoNote => "video_note",
            MediaKind::Sticker => "sticker",
            MediaKind::Document => "document",
        }
    }

    /// The Bot API method that sends a file of this kind.
    pub fn send_method(self) -> &'static str {
        match self {
            MediaKind::Photo => "sendPhoto",
            MediaKind::Video => "sendVideo",
            MediaKind::Animation => "sendAnimation",
            MediaKind::Audio => "sendAudio",
            MediaKind::Voice => "sendVoice",
            MediaKind::VideoNote => "sendVideoNote",
            MediaKind::Sticker => "sendSticker",
            MediaKind::Document => "sendDocument",
        }
    }

    /// The gateway's method that uploads a file of this kind without a chat (ENHANCED.md).
    pub fn upload_method(self) -> &'static str {
        match self {
            MediaKind::Photo => "uploadPhoto",
            MediaKind::Video => "uploadVideo",
            MediaKind::Animation => "uploadAnimation",
            MediaKind::Audio => "uploadAudio",
            MediaKind::Voice => "uploadVoice",
            MediaKind::VideoNote => "uploadVideoNote",
            MediaKind::Sticker => "uploadSticker",
            MediaKind::Document => "uploadDocument",
        }
    }

    /// The kind a file parameter (or `InputMedia` type) names.
    pub fn from_param(param: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.param() == param)
    }

    /// The kind a single-file send method sends (spelt as the Bot API spells it).
    pub fn of_send_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.send_method() == method)
    }

    /// The kind an `upload<Kind>` method uploads, in any case.
    pub fn of_upload_method(method: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.upload_method().eq_ignore_ascii_case(method))
    }
}

#[cfg(test)]
mod tests {
    use super::MediaKind;

    #[test]
    fn every_kind_names_itself_one_way() {
        for k in MediaKind::ALL {
            assert_eq!(MediaKind::from_param(k.param()), Some(k));
            assert_eq!(MediaKind::of_send_method(k.send_method()), Some(k));
            let upper = k.upload_method().to_ascii_uppercase();
            assert_eq!(MediaKind::of_upload_method(&upper), Some(k));
        }
        assert_eq!(MediaKind::of_send_method("sendMessage"), None);
        assert_eq!(MediaKind::from_param("file"), None);
        assert_eq!(MediaKind::of_upload_method("uploadFile"), None);
    }
}

/// What was read from a file. Every field is what the file says; absent when it says nothing.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Metadata {
    pub size: u64,
    /// libmediainfo's name of the container or format: "MPEG-4", "Matroska", "WebM", "Ogg",
    /// "MPEG Audio", "JPEG", "PNG", "WebP", "GIF", "GZip", ...
    pub format: Option<String>,
    /// "QuickTime" for a .mov in the MPEG-4 family.
    pub format_profile: Option<String>,
    pub duration_ms: Option<u64>,
    pub title: Option<String>,
    pub performer: Option<String>,
    /// Whether an mp4 can be played before it has all arrived (its index comes first).
    pub streamable: Option<bool>,
    pub video: Option<Video>,
    /// The first audio track's format: "AAC", "Opus", "Vorbis", "MPEG Audio", "FLAC", "PCM".
    pub audio: Option<String>,
    pub image: Option<Image>,
    /// A gzip'd Lottie animation (Telegram's `.tgs` animated sticker).
    pub lottie: bool,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Video {
    /// "AVC", "HEVC", "VP9", "AV1", ...
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub duration_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Image {
    pub format: String,
    pub width: u32,
    pub height: u32,
    /// A WebP with an alpha channel.
    pub alpha: bool,
}

impl Metadata {
    /// Seconds, as the Bot API counts them.
    pub fn duration_s(&self) -> Option<u64> {
        let ms = self
            .duration_ms
            .or(self.video.as_ref().and_then(|v| v.duration_ms))?;
        Some((ms + 500) / 1000)
    }

    /// Width and height of the picture (video or image).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        let (w, h) = match (&self.video, &self.image) {
            (Some(v), _) => (v.width, v.height),
            (None, Some(i)) => (i.width, i.height),
            _ => return None,
        };
        (w > 0 && h > 0).then_some((w, h))
    }

    /// The MIME type the content has, when it is one this crate knows.
    pub fn mime_type(&self) -> Option<&'static str> {
        let video = self.video.is_some();
        Some(match self.format.as_deref()? {
            "MPEG-4" if self.format_profile.as_deref() == Some("QuickTime") => "video/quicktime",
            "MPEG-4" if video => "video/mp4",
            "MPEG-4" => "audio/mp4",
            "Matroska" => "video/x-matroska",
            "WebM" => "video/webm",
            "Ogg" => "audio/ogg",
            "MPEG Audio" => "audio/mpeg",
            "FLAC" => "audio/flac",
            "Wave" => "audio/x-wav",
            "JPEG" => "image/jpeg",
            "PNG" => "image/png",
            "WebP" => "image/webp",
            "GIF" => "image/gif",
            "GZip" if self.lottie => "application/x-tgsticker",
            "PDF" => "application/pdf",
            _ => return None,
        })
    }

    /// The Bot API parameters a send of `kind` takes from the file, as text values. The caller
    /// adds those the request lacks.
    pub fn params_for(&self, kind: MediaKind) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let dims = self.dimensions();
        let duration = self.duration_s();
        match kind {
            MediaKind::Video | MediaKind::Animation => {
                if let Some((w, h)) = dims {
                    out.push(("width", w.to_string()));
                    out.push(("height", h.to_string()));
                }
                if let Some(d) = duration {
                    out.push(("duration", d.to_string()));
                }
                let h264_mp4 = self.format.as_deref() == Some("MPEG-4")
                    && self.video.as_ref().is_some_and(|v| v.format == "AVC");
                if kind == MediaKind::Video && h264_mp4 && self.streamable != Some(false) {
                    out.push(("supports_streaming", "true".into()));
                }
            }
            MediaKind::VideoNote => {
                if let Some((w, h)) = dims {
                    out.push(("length", w.min(h).to_string()));
                }
                if let Some(d) = duration {
                    out.push(("duration", d.to_string()));
                }
            }
            MediaKind::Audio | MediaKind::Voice => {
                if let Some(d) = duration {
                    out.push(("duration", d.to_string()));
                }
                if kind == MediaKind::Audio {
                    if let Some(p) = &self.performer {
                        out.push(("performer", p.clone()));
                    }
                    if let Some(t) = &self.title {
                        out.push(("title", t.clone()));
                    }
                }
            }
            _ => {}
        }
        out
    }
}
