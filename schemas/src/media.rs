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
