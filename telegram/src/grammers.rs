//! [`Mtproto`] on grammers-client, logged in as the bot with its token.
//!
//! One client per bot, created on first need: its session (home DC, DC addresses and auth
//! keys) is loaded from a [`SessionVault`] (the store, sealed under the cluster key), and
//! saved back whenever grammers changes it, so a restart does not sign in again. A session
//! that is not authorized signs in with `auth.importBotAuthorization`.
//!
//! With a sandbox (`dc_addr` and `sandbox_key` set) every DC points at the sandbox's MTProto
//! face with the bot's derived auth key, since Telegram's key exchange cannot run there.

use crate::file_id::{FileId, Location, PhotoSizeSource};
use crate::mtproto::{ChunkStream, Mtproto, MtprotoError};
use async_trait::async_trait;
use bytes::Bytes;
use grammers_client::media::Downloadable;
use grammers_client::session::storages::MemorySession;
use grammers_client::session::types::{DcOption, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_client::session::{Session, SessionData};
use grammers_client::{tl, Client, InvocationError, SenderPool};
use schemas::{BotId, BotToken};
use std::collections::HashMap;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use tokio::sync::Mutex;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where sessions are kept (sealed by the implementation; the bytes here are secret).
#[async_trait]
pub trait SessionVault: Send + Sync + 'static {
    async fn load(&self, bot: BotId) -> Result<Option<Vec<u8>>, String>;
    async fn save(&self, bot: BotId, session: Vec<u8>) -> Result<(), String>;
}

#[derive(Clone, Debug)]
pub struct GrammersConfig {
    pub api_id: i32,
    pub api_hash: String,
    /// Connect every DC here instead of Telegram (the sandbox's MTProto face).
    pub dc_addr: Option<SocketAddrV4>,
    /// The sandbox's master key: each bot's auth key is derived from it.
    pub sandbox_key: Option<[u8; 32]>,
}

pub struct Grammers {
    cfg: GrammersConfig,
    vault: Arc<dyn SessionVault>,
    clients: Mutex<HashMap<BotId, Client>>,
}

/// A session kept in memory and written through to the vault on every change that
/// matters for a restart (home DC, DC options with their auth keys).
struct VaultSession {
    bot: BotId,
    inner: MemorySession,
    snapshot: std::sync::Mutex<Snapshot>,
    vault: Arc<dyn SessionVault>,
}

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    home_dc: i32,
    dcs: Vec<SavedDc>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct SavedDc {
    id: i32,
    ipv4: SocketAddrV4,
    ipv6: SocketAddrV6,
    auth_key: Option<String>,
}

impl Snapshot {
    fn from_bytes(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }

    fn data(&self) -> SessionData {
        let mut data = SessionData {
            home_dc: self.home_dc,
            ..SessionData::default()
        };
        for d in &self.dcs {
            let auth_key = d
                .auth_key
                .as_deref()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|k| <[u8; 256]>::try_from(k).ok());
            data.dc_options.insert(
                d.id,
                DcOption {
                    id: d.id,
                    ipv4: d.ipv4,
                    ipv6: d.ipv6,
                    auth_key,
                },
            );
        }
        data
    }

    fn set_dc(&mut self, o: &DcOption) {
        self.dcs.retain(|d| d.id != o.id);
        self.dcs.push(SavedDc {
            id: o.id,
            ipv4: o.ipv4,
            ipv6: o.ipv6,
            auth_key: o.auth_key.map(hex::encode),
        });
    }
}

impl VaultSession {
    fn save(&self) -> BoxFuture<'_, ()> {
        let bytes = {
            let s = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*s).expect("plain data serialises")
        };
        Box::pin(async move {
            if let Err(error) = self.vault.save(self.bot, bytes).await {
                tracing::warn!(%error, "could not save an MTProto session");
            }
        })
    }
}

impl Session for VaultSession {
    type Error = <MemorySession as Session>::Error;

    fn home_dc_id(&self) -> Result<i32, Self::Error> {
        self.inner.home_dc_id()
    }

    fn set_home_dc_id(
        &self,
        dc_id: i32,
    ) -> grammers_client::session::BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move {
            self.inner.set_home_dc_id(dc_id).await?;
            self.snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .home_dc = dc_id;
            self.save().await;
            Ok(())
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, Self::Error> {
        self.inner.dc_option(dc_id)
    }

    fn set_dc_option(
        &self,
        o: &DcOption,
    ) -> grammers_client::session::BoxFuture<'_, Result<(), Self::Error>> {
        let o = o.clone();
        Box::pin(async move {
            self.inner.set_dc_option(&o).await?;
            self.snapshot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_dc(&o);
            self.save().await;
            Ok(())
        })
    }

    fn peer(
        &self,
        peer: PeerId,
    ) -> grammers_client::session::BoxFuture<'_, Result<Option<PeerInfo>, Self::Error>> {
        self.inner.peer(peer)
    }

    fn cache_peer(
        &self,
        peer: PeerInfo,
    ) -> grammers_client::session::BoxFuture<'_, Result<(), Self::Error>> {
        self.inner.cache_peer(peer)
    }

    fn updates_state(
        &self,
    ) -> grammers_client::session::BoxFuture<'_, Result<UpdatesState, Self::Error>> {
        self.inner.updates_state()
    }

    fn set_update_state(
        &self,
        update: UpdateState,
    ) -> grammers_client::session::BoxFuture<'_, Result<(), Self::Error>> {
        self.inner.set_update_state(update)
    }
}

/// A Bot API file id as grammers downloads it: location and DC, no message needed.
struct Location_ {
    location: tl::enums::InputFileLocation,
    dc_id: i32,
}

impl Downloadable for Location_ {
    fn to_raw_input_location(&self) -> Option<tl::enums::InputFileLocation> {
        Some(self.location.clone())
    }

    fn dc_id(&self) -> Option<i32> {
        Some(self.dc_id)
    }
}

fn location(file: &FileId) -> Result<Location_, MtprotoError> {
    let location = match &file.location {
        Location::Common { id, access_hash } => tl::types::InputDocumentFileLocation {
            id: *id,
            access_hash: *access_hash,
            file_reference: file.file_reference.clone(),
            thumb_size: String::new(),
        }
        .into(),
        Location::Photo {
            id,
            access_hash,
            source: PhotoSizeSource::Thumbnail { thumb_type, .. },
        } => tl::types::InputPhotoFileLocation {
            id: *id,
            access_hash: *access_hash,
            file_reference: file.file_reference.clone(),
            thumb_size: char::from_u32(*thumb_type as u32)
                .map(String::from)
                .unwrap_or_default(),
        }
        .into(),
        other => {
            return Err(MtprotoError::NotDownloadable(format!(
                "{} ({other:?})",
                file.file_type.name()
            )))
        }
    };
    Ok(Location_ {
        location,
        dc_id: file.dc_id,
    })
}

fn from_invocation(e: InvocationError) -> MtprotoError {
    match e {
        InvocationError::Rpc(r) => MtprotoError::Rpc {
            code: r.code,
            name: r.name,
        },
        other => MtprotoError::Other(other.to_string()),
    }
}

/// grammers' largest chunk (Telegram allows up to 1 MiB, but not across a 1 MiB boundary:
/// 512 KiB chunks never cross one).
const CHUNK: i32 = 512 * 1024;

/// Chunk requests in flight per download (grammers' own downloads use 4 workers).
const PARALLEL: usize = 4;

impl Grammers {
    pub fn new(cfg: GrammersConfig, vault: Arc<dyn SessionVault>) -> Self {
        Self {
            cfg,
            vault,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The bot's client: cached, or built from its saved session (signing in when needed).
    async fn client(&self, token: &BotToken) -> Result<Client, MtprotoError> {
        let bot = token.bot_id();
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&bot) {
            return Ok(c.clone());
        }
        let saved = self
            .vault
            .load(bot)
            .await
            .map_err(MtprotoError::Other)?
            .and_then(|b| Snapshot::from_bytes(&b));
        let fresh = saved.is_none();
        let mut snapshot = saved.unwrap_or_else(|| Snapshot {
            home_dc: SessionData::default().home_dc,
            dcs: Vec::new(),
        });
        if let (Some(addr), Some(master)) = (self.cfg.dc_addr, self.cfg.sandbox_key) {
            let key = crate::mtproto::sandbox_auth_key(&master, bot.0);
            for id in 1..=5 {
                snapshot.set_dc(&DcOption {
                    id,
                    ipv4: addr,
                    ipv6: SocketAddrV6::new(addr.ip().to_ipv6_mapped(), addr.port(), 0, 0),
                    auth_key: Some(key),
                });
            }
        }
        let session = Arc::new(VaultSession {
            bot,
            inner: MemorySession::from(snapshot.data()),
            snapshot: std::sync::Mutex::new(snapshot),
            vault: self.vault.clone(),
        });
        let pool = SenderPool::new(session.clone(), self.cfg.api_id);
        let client = Client::new(pool.handle);
        tokio::spawn(pool.runner.run());
        // Updates of the bot's MTProto session are not used (yet): drain them so the runner
        // never waits on a full channel.
        let mut updates = pool.updates;
        tokio::spawn(async move { while updates.recv().await.is_some() {} });

        let authorized = !fresh && client.is_authorized().await.unwrap_or(false);
        if !authorized {
            tracing::info!(bot_id = %bot, "signing in to MTProto as the bot");
            client
                .bot_sign_in(token.expose(), &self.cfg.api_hash)
                .await
                .map_err(from_invocation)?;
            session.save().await;
        }
        clients.insert(bot, client.clone());
        Ok(client)
    }
}

#[async_trait]
impl Mtproto for Grammers {
    async fn download(
        &self,
        token: &BotToken,
        file: &FileId,
        offset: u64,
    ) -> Result<ChunkStream, MtprotoError> {
        use futures_util::StreamExt;
        let loc = location(file)?;
        let client = self.client(token).await?;
        let first_chunk = (offset / CHUNK as u64) as i32;
        let skip = (offset % CHUNK as u64) as usize;
        // The first chunk through grammers' own iterator: it follows FILE_MIGRATE and copies
        // the authorization to the file's DC when that is not the home DC.
        let mut iter = client
            .iter_download(&loc)
            .chunk_size(CHUNK)
            .skip_chunks(first_chunk);
        let first = iter
            .next()
            .await
            .map_err(from_invocation)?
            .unwrap_or_default();
        let short = first.len() < CHUNK as usize;
        let head = futures_util::stream::iter(
            (first.len() > skip).then(|| Ok(Bytes::from(first).slice(skip..))),
        );
        if short {
            return Ok(Box::pin(head));
        }
        // The rest: PARALLEL requests in flight at once, answered in order, until a short or
        // empty chunk (the end: Telegram does not say the size up front).
        let dc = loc.dc_id;
        let location = loc.location;
        let rest = futures_util::stream::iter((first_chunk as i64 + 1)..)
            .map(move |n| {
                let client = client.clone();
                let request = tl::functions::upload::GetFile {
                    precise: false,
                    cdn_supported: false,
                    location: location.clone(),
                    offset: n * CHUNK as i64,
                    limit: CHUNK,
                };
                async move {
                    match client.invoke_in_dc(dc, &request).await {
                        Ok(tl::enums::upload::File::File(f)) => Ok(f.bytes),
                        Ok(tl::enums::upload::File::CdnRedirect(_)) => Err(MtprotoError::Other(
                            "a CDN redirect, though CDNs were not offered".into(),
                        )),
                        Err(e) => Err(from_invocation(e)),
                    }
                }
            })
            .buffered(PARALLEL)
            .scan(false, |done, chunk| {
                let out = if *done {
                    None
                } else {
                    match chunk {
                        Ok(b) if b.is_empty() => None,
                        Ok(b) => {
                            *done = b.len() < CHUNK as usize;
                            Some(Ok(Bytes::from(b)))
                        }
                        Err(e) => {
                            *done = true;
                            Some(Err(e))
                        }
                    }
                };
                futures_util::future::ready(out)
            });
        Ok(Box::pin(head.chain(rest)))
    }

    async fn username(&self, token: &BotToken) -> Result<String, MtprotoError> {
        let client = self.client(token).await?;
        let me = client.get_me().await.map_err(from_invocation)?;
        me.username()
            .map(str::to_owned)
            .ok_or_else(|| MtprotoError::Other("the bot has no username".into()))
    }
}
