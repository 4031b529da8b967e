//! The MTProto backend: what the processors need from Telegram beyond the Bot API, logged in
//! as the bot itself. [`Mtproto`] is the seam; [`grammers`](crate::grammers) implements it on
//! grammers-client, one session per bot.

use crate::file_id::{FileId, FileType};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use schemas::BotToken;
use std::pin::Pin;

/// Telegram's own schema (layer 230, as grammers renders it): results too rich to restate
/// (messages, photos, full user and chat info) are given in it.
pub use grammers_tl_types as tl;

/// File bytes in order, as Telegram hands them out.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, MtprotoError>> + Send>>;

/// Bytes to upload, in order.
pub type UploadStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Telegram's upload part size (the largest) and part cap: 4000 × 512 KiB = 2000 MiB.
pub const UPLOAD_PART: u64 = 512 * 1024;
pub const MAX_UPLOAD_PARTS: u64 = 4000;

/// A file uploaded to Telegram's servers, not yet attached to anything.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub input: tl::enums::InputFile,
    pub size: u64,
    pub name: String,
}

/// What an upload becomes: a photo, or a document described by its attributes (video,
/// audio, voice, animation, sticker, file name).
#[derive(Clone, Debug)]
pub struct NewMedia {
    pub photo: bool,
    pub mime_type: String,
    pub attributes: Vec<tl::enums::DocumentAttribute>,
    /// Keep it a plain document whatever its content (Bot API `disable_content_type_detection`).
    pub force_file: bool,
}

/// A file stored on Telegram, as the Bot API names it.
#[derive(Clone, Debug)]
pub struct StoredMedia {
    pub file_id: FileId,
    pub file_size: u64,
    pub mime_type: Option<String>,
}

/// A peer found by username.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPeer {
    /// Its Bot API chat id (users positive, groups negative, channels -100…).
    pub chat_id: i64,
    pub access_hash: Option<i64>,
    pub is_bot: bool,
    pub username: Option<String>,
    pub first_name: Option<String>,
}

/// The Bot API type of a document with these attributes.
pub fn document_type(attributes: &[tl::enums::DocumentAttribute]) -> FileType {
    use tl::enums::DocumentAttribute as A;
    for a in attributes {
        match a {
            A::Video(v) if v.round_message => return FileType::VideoNote,
            A::Video(_) => return FileType::Video,
            A::Audio(a) if a.voice => return FileType::Voice,
            A::Audio(_) => return FileType::Audio,
            A::Animated => return FileType::Animation,
            A::Sticker(_) => return FileType::Sticker,
            _ => {}
        }
    }
    FileType::Document
}

#[derive(Debug, thiserror::Error)]
pub enum MtprotoError {
    /// No `TELEGRAM_API_ID`/`TELEGRAM_API_HASH`: MTProto is off.
    #[error("MTProto is not configured (TELEGRAM_API_ID and TELEGRAM_API_HASH)")]
    NotConfigured,
    /// Over Telegram's 4000-part upload cap (2000 MiB).
    #[error("the file is {size} bytes; Telegram takes at most 4000 parts of 512 KiB (2000 MiB)")]
    TooBig { size: u64 },
    /// Telegram refused a request: `code` and its error name (`FILE_REFERENCE_EXPIRED`).
    #[error("telegram answered {code} {name}")]
    Rpc { code: i32, name: String },
    /// The file id names something MTProto cannot download (a web file, say).
    #[error("this file cannot be downloaded through MTProto: {0}")]
    NotDownloadable(String),
    /// The connection, the session store or the sign-in failed.
    #[error("MTProto: {0}")]
    Other(String),
}

/// The Bot API error an MTProto failure is: a 400 when the bot's request is at fault or
/// the gateway has no MTProto (as every method that needs it answers then), else a 502
/// naming what Telegram said.
impl From<&MtprotoError> for schemas::ApiError {
    fn from(e: &MtprotoError) -> Self {
        if e.is_bad_request() || matches!(e, MtprotoError::NotConfigured) {
            schemas::ApiError::bad_request(e.to_string())
        } else {
            schemas::ApiError::bad_gateway(e.to_string())
        }
    }
}

impl MtprotoError {
    /// Whether the bot's own request is at fault (and a 400 is the honest answer).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            MtprotoError::NotDownloadable(_)
                | MtprotoError::TooBig { .. }
                | MtprotoError::Rpc { code: 400, .. }
        )
    }
}

/// What the gateway asks of Telegram over MTProto, as the bot.
#[async_trait]
pub trait Mtproto: Send + Sync + 'static {
    /// Streams the file a Bot API file id names, from byte `offset` to its end.
    async fn download(
        &self,
        token: &BotToken,
        file: &FileId,
        offset: u64,
    ) -> Result<ChunkStream, MtprotoError>;

    /// The bot's own username (`getMe` over MTProto).
    async fn username(&self, token: &BotToken) -> Result<String, MtprotoError>;

    /// Uploads `size` bytes (known up front, as Telegram's part count needs it); refuses
    /// more than 4000 parts before sending any.
    async fn upload(
        &self,
        token: &BotToken,
        stream: UploadStream,
        size: u64,
        name: &str,
    ) -> Result<Uploaded, MtprotoError>;

    /// Keeps an upload as media without sending it to anyone (`messages.uploadMedia` to
    /// `inputPeerSelf`); the answer names it as the Bot API does.
    async fn upload_media(
        &self,
        token: &BotToken,
        file: Uploaded,
        media: NewMedia,
    ) -> Result<StoredMedia, MtprotoError>;

    /// Sends a stored file (a Bot API file id) to a chat; the new message's id.
    async fn send_media(
        &self,
        token: &BotToken,
        chat_id: i64,
        file: &FileId,
        caption: &str,
    ) -> Result<i32, MtprotoError>;

    /// A user, bot, group or channel by username (users and bots too, unlike the Bot API).
    async fn resolve_username(
        &self,
        token: &BotToken,
        username: &str,
    ) -> Result<Option<ResolvedPeer>, MtprotoError>;

    /// Messages of a chat by id (`messageEmpty` for ids that do not exist), with the users
    /// and chats they name.
    async fn get_messages(
        &self,
        token: &BotToken,
        chat_id: i64,
        ids: &[i32],
    ) -> Result<(Vec<tl::enums::Message>, crate::message::Named), MtprotoError>;

    /// A user's profile photos from `offset` (newest first), at most `limit`, with how many
    /// the user has in all.
    async fn profile_photos(
        &self,
        token: &BotToken,
        user_id: i64,
        offset: i32,
        limit: i32,
    ) -> Result<(i32, Vec<tl::enums::Photo>), MtprotoError>;

    /// A group's, supergroup's or channel's photo history, newest first (`messages.search` for
    /// its photo changes), from `offset`, at most `limit`, with how many there are in all.
    async fn chat_photos(
        &self,
        token: &BotToken,
        chat_id: i64,
        offset: i32,
        limit: i32,
    ) -> Result<(i32, Vec<tl::enums::Photo>), MtprotoError>;

    /// Shows a chat action (typing, uploading…) once; Telegram shows it for about 5 s.
    async fn chat_action(
        &self,
        token: &BotToken,
        chat_id: i64,
        action: tl::enums::SendMessageAction,
    ) -> Result<(), MtprotoError>;

    /// Everything Telegram says about a user.
    async fn full_user(
        &self,
        token: &BotToken,
        user_id: i64,
    ) -> Result<tl::types::users::UserFull, MtprotoError>;

    /// Everything Telegram says about a group or channel.
    async fn full_chat(
        &self,
        token: &BotToken,
        chat_id: i64,
    ) -> Result<tl::types::messages::ChatFull, MtprotoError>;
}

/// The auth key a bot uses with the sandbox's MTProto face: 256 bytes expanded from the
/// sandbox's master key and the bot id (SHA-256 in counter mode). Telegram's key exchange
/// cannot run against a local server, so both sides derive the key instead.
pub fn sandbox_auth_key(master: &[u8; 32], bot_id: i64) -> [u8; 256] {
    use sha2::{Digest, Sha256};
    let mut key = [0u8; 256];
    for (i, block) in key.chunks_mut(32).enumerate() {
        let h = Sha256::new()
            .chain_update(b"telepipe sandbox auth key v1")
            .chain_update(master)
            .chain_update(bot_id.to_le_bytes())
            .chain_update([i as u8])
            .finalize();
        block.copy_from_slice(&h);
    }
    key
}
