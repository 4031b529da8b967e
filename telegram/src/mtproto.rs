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
    /// Streams the file a Bot API file id names, from byte `offset` to its end.
    async fn download(
        &self,
        token: &BotToken,
        file: &FileId,
        offset: u64,
    ) -> Result<ChunkStream, MtprotoError>;

    /// The bot's own username (`getMe` over MTProto).
    async fn username(&self, token: &BotToken) -> Result<String, MtprotoError>;
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
