//! What a call's file stages found, carried with the call from one stage to the next
//! (`calls.media`, `calls.send`): references into the blob store and what was read of the
//! file, never its bytes.
//!
//! A send or an upload of a file the gateway handles, a media group and an inline answer with
//! files cross three stages: `files` finds the file, or each item's (a URL fetched, an
//! uploaded part, a file_id's bytes) and keeps it in the blob store; `media` reads it
//! (libmediainfo) and, for `sendFile` and `uploadFile`, decides its kind; `send` uploads and
//! sends it. Each adds its part here and publishes the call on.
//!
//! Only records of `calls.media` and `calls.send` carry it, topics added with it: an optional
//! field, so the schema version stays. The three stages are upgraded together (a stage that
//! does not know a call is staged would run it whole).

use crate::body::BlobRef;
use crate::media::{MediaKind, Metadata};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    /// The file, kept in the blob store. Absent: the call names nothing the gateway handles
    /// (a plain file_id, an oversized part with no way around the Bot API's limit), and the
    /// send stage forwards it as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FoundFile>,
    /// What the media stage read of the file. Absent when it was not read: the bot sent the
    /// same file as the same kind before, and its cached file_id goes instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Metadata>,
    /// The kind the file goes as, when the call left it to the gateway (`sendFile`,
    /// `uploadFile`): decided by the media stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MediaKind>,
    /// A media group's items (one per item of its `media`) or an inline answer's (one per
    /// result), in order: the item's file and what was read of it, each absent for an item the
    /// gateway leaves as it came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StagedItem>,
}

/// One item of a media group between the file stages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StagedItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FoundFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Metadata>,
}

impl Staged {
    /// Every file found for the call: the send's, or the group's items'.
    pub fn files_mut(&mut self) -> impl Iterator<Item = &mut FoundFile> {
        self.file
            .iter_mut()
            .chain(self.items.iter_mut().filter_map(|i| i.file.as_mut()))
    }

    /// The same, to read.
    pub fn files(&self) -> impl Iterator<Item = &FoundFile> {
        self.file
            .iter()
            .chain(self.items.iter().filter_map(|i| i.file.as_ref()))
    }
}

/// A file found for a call: where its bytes are, its name and its type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoundFile {
    pub blob: BlobRef,
    pub file_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_call_reads_back_as_written_and_leaves_out_what_is_absent() {
        let staged = Staged {
            file: Some(FoundFile {
                blob: BlobRef {
                    sha256: "ab".repeat(32),
                    size: 7,
                    key: "sha256/ab/ab/x".into(),
                },
                file_name: "clip.mp4".into(),
                content_type: None,
            }),
            meta: Some(Metadata {
                size: 7,
                format: Some("MPEG-4".into()),
                duration_ms: Some(1500),
                ..Default::default()
            }),
            kind: Some(MediaKind::Video),
            items: Vec::new(),
        };
        let json = serde_json::to_string(&staged).unwrap();
        assert!(!json.contains("content_type"), "{json}");
        assert_eq!(serde_json::from_str::<Staged>(&json).unwrap(), staged);
        assert_eq!(
            serde_json::from_str::<Staged>("{}").unwrap(),
            Staged::default()
        );
        let group = Staged {
            items: vec![
                StagedItem::default(),
                StagedItem {
                    file: staged.file.clone(),
                    meta: None,
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_string(&group).unwrap();
        assert_eq!(serde_json::from_str::<Staged>(&json).unwrap(), group);
        assert_eq!(group.files().count(), 1);
    }
}
