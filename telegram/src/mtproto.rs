//! The MTProto backend: what the processors need from Telegram beyond the Bot API, logged in
//! as the bot itself. [`Mtproto`] is the seam; [`grammers`](crate::grammers) implements it on
//! grammers-client, one session per bot.

use crate::file_id::FileId;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use schemas::BotToken;
use std::pin::Pin;

/// File bytes in order, as Telegram hands them out.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, MtprotoError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum MtprotoError {
    /// No `TELEGRAM_API_ID`/`TELEGRAM_API_HASH`: MTProto is off.
    #[error("MTProto is not configured (TELEGRAM_API_ID and TELEGRAM_API_HASH)")]
    NotConfigured,
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

impl MtprotoError {
    /// Whether the bot's own request is at fault (and a 400 is the honest answer).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, MtprotoError::NotDownloadable(_))
            || matches!(self, MtprotoError::Rpc { code: 400, .. })
    }
}

/// What the gateway asks of Telegram over MTProto, as the bot.
#[async_trait]
pub trait Mtproto: Send + Sync + 'static {
    /// Streams the whole file a Bot API file id names, from its first byte.
    async fn download(&self, token: &BotToken, file: &FileId) -> Result<ChunkStream, MtprotoError>;

    /// The bot's own username (`getMe` over MTProto).
    async fn username(&self, token: &BotToken) -> Result<String, MtprotoError>;
}
