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
use crate::mtproto::{
    document_type, ChunkStream, Mtproto, MtprotoError, NewMedia, ResolvedPeer, StoredMedia,
    UploadStream, Uploaded, MAX_UPLOAD_PARTS, UPLOAD_PART,
};
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
    /// Each client's session: uploads read the home DC and its auth key from it.
    sessions: std::sync::Mutex<HashMap<BotId, Arc<VaultSession>>>,
    /// Access hashes learnt from resolved peers, by (bot, Bot API chat id).
    hashes: std::sync::Mutex<HashMap<(BotId, i64), i64>>,
    /// Where each bot's MTProto connections run: the runtime this was made on (a process's
    /// shared one), not the lane (`lifecycle::lanes`) of whichever call came first, which
    /// would then carry every call of that bot's and its downloads' decryption.
    runtime: Option<tokio::runtime::Handle>,
}

/// Bot API ids of channels start here (-100…).
const CHANNEL_BASE: i64 = -1_000_000_000_000;

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

fn rand_i64() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    // Random enough for a random_id (unique per message); no extra dependency for it.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as i64
}

/// The Bot API name of what `messages.uploadMedia` answered.
fn stored_media(answer: tl::enums::MessageMedia, size: u64) -> Result<StoredMedia, MtprotoError> {
    match answer {
        tl::enums::MessageMedia::Document(m) => match m.document {
            Some(tl::enums::Document::Document(d)) => Ok(StoredMedia {
                file_id: FileId::common(
                    document_type(&d.attributes),
                    d.dc_id,
                    d.file_reference,
                    d.id,
                    d.access_hash,
                ),
                file_size: d.size.max(0) as u64,
                mime_type: Some(d.mime_type),
            }),
            _ => Err(MtprotoError::Other("uploadMedia gave no document".into())),
        },
        tl::enums::MessageMedia::Photo(m) => match m.photo {
            Some(tl::enums::Photo::Photo(p)) => {
                // The largest size is the one the Bot API's photo file id names.
                let (thumb, bytes) = p
                    .sizes
                    .iter()
                    .filter_map(|s| match s {
                        tl::enums::PhotoSize::Size(s) => Some((s.r#type.clone(), s.size as u64)),
                        tl::enums::PhotoSize::Progressive(s) => Some((
                            s.r#type.clone(),
                            s.sizes.last().copied().unwrap_or(0) as u64,
                        )),
                        _ => None,
                    })
                    .max_by_key(|(_, b)| *b)
                    .unwrap_or(("y".into(), size));
                Ok(StoredMedia {
                    file_id: FileId::photo(
                        p.dc_id,
                        p.file_reference,
                        p.id,
                        p.access_hash,
                        thumb.bytes().next().unwrap_or(b'y'),
                    ),
                    file_size: bytes,
                    mime_type: Some("image/jpeg".into()),
                })
            }
            _ => Err(MtprotoError::Other("uploadMedia gave no photo".into())),
        },
        other => Err(MtprotoError::Other(format!(
            "uploadMedia gave {}",
            format!("{other:?}")
                .split('(')
                .next()
                .unwrap_or("something else")
        ))),
    }
}

/// The id of the message a send made, from the updates it answered with.
fn sent_message_id(updates: &tl::enums::Updates, random_id: i64) -> Option<i32> {
    let list = match updates {
        tl::enums::Updates::Updates(u) => &u.updates,
        tl::enums::Updates::Combined(u) => &u.updates,
        tl::enums::Updates::UpdateShortSentMessage(u) => return Some(u.id),
        _ => return None,
    };
    list.iter().find_map(|u| match u {
        tl::enums::Update::MessageId(m) if m.random_id == random_id => Some(m.id),
        _ => None,
    })
}

pub(crate) fn from_invocation(e: InvocationError) -> MtprotoError {
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
            sessions: std::sync::Mutex::new(HashMap::new()),
            hashes: std::sync::Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(rt) => drop(rt.spawn(work)),
            None => drop(tokio::spawn(work)),
        }
    }

    fn hash(&self, bot: BotId, chat: i64) -> i64 {
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(bot, chat))
            .copied()
            .unwrap_or(0)
    }

    /// The input peer of a Bot API chat id. Unknown access hashes are 0, which Telegram
    /// accepts from bots for peers they have met.
    fn input_peer(&self, bot: BotId, chat: i64) -> tl::enums::InputPeer {
        if chat > 0 {
            tl::types::InputPeerUser {
                user_id: chat,
                access_hash: self.hash(bot, chat),
            }
            .into()
        } else if chat > CHANNEL_BASE {
            tl::types::InputPeerChat { chat_id: -chat }.into()
        } else {
            tl::types::InputPeerChannel {
                channel_id: CHANNEL_BASE - chat,
                access_hash: self.hash(bot, chat),
            }
            .into()
        }
    }

    fn input_user(&self, bot: BotId, user: i64) -> tl::enums::InputUser {
        tl::types::InputUser {
            user_id: user,
            access_hash: self.hash(bot, user),
        }
        .into()
    }

    fn input_channel(&self, bot: BotId, chat: i64) -> tl::enums::InputChannel {
        tl::types::InputChannel {
            channel_id: CHANNEL_BASE - chat,
            access_hash: self.hash(bot, chat),
        }
        .into()
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
        self.spawn(pool.runner.run());
        // Updates of the bot's MTProto session are not used (yet): drain them so the runner
        // never waits on a full channel.
        let mut updates = pool.updates;
        self.spawn(async move { while updates.recv().await.is_some() {} });

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
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bot, session);
        Ok(client)
    }

    /// The bot's home DC, as uploads connect to it (after [`Self::client`] signed in).
    fn home(&self, bot: BotId) -> Result<crate::uploader::Home, MtprotoError> {
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&bot)
            .cloned()
            .ok_or_else(|| MtprotoError::Other("no MTProto session".into()))?;
        let dc = session
            .home_dc_id()
            .map_err(|e| MtprotoError::Other(format!("session: {e}")))?;
        let option = session
            .dc_option(dc)
            .map_err(|e| MtprotoError::Other(format!("session: {e}")))?
            .ok_or_else(|| MtprotoError::Other(format!("no address for DC {dc}")))?;
        let auth_key = option
            .auth_key
            .ok_or_else(|| MtprotoError::Other(format!("no auth key for DC {dc}")))?;
        Ok(crate::uploader::Home {
            addr: option.ipv4.into(),
            auth_key,
            api_id: self.cfg.api_id,
        })
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

    async fn upload(
        &self,
        token: &BotToken,
        stream: UploadStream,
        size: u64,
        name: &str,
    ) -> Result<Uploaded, MtprotoError> {
        if size.div_ceil(UPLOAD_PART) > MAX_UPLOAD_PARTS {
            return Err(MtprotoError::TooBig { size });
        }
        self.client(token).await?;
        let home = self.home(token.bot_id())?;
        let reader = tokio_util::io::StreamReader::new(stream);
        let file_id = rand_i64();
        let parts = crate::uploader::upload(home, reader, size, file_id).await?;
        Ok(Uploaded {
            input: crate::uploader::input_file(file_id, parts, size, name),
            size,
            name: name.to_owned(),
        })
    }

    async fn upload_media(
        &self,
        token: &BotToken,
        file: Uploaded,
        media: NewMedia,
    ) -> Result<StoredMedia, MtprotoError> {
        let client = self.client(token).await?;
        let input: tl::enums::InputMedia = if media.photo {
            tl::types::InputMediaUploadedPhoto {
                spoiler: false,
                live_photo: false,
                file: file.input,
                stickers: None,
                ttl_seconds: None,
                video: None,
            }
            .into()
        } else {
            tl::types::InputMediaUploadedDocument {
                nosound_video: false,
                force_file: media.force_file,
                spoiler: false,
                file: file.input,
                thumb: None,
                mime_type: media.mime_type.clone(),
                attributes: media.attributes.clone(),
                stickers: None,
                video_cover: None,
                video_timestamp: None,
                ttl_seconds: None,
            }
            .into()
        };
        let answer = client
            .invoke(&tl::functions::messages::UploadMedia {
                business_connection_id: None,
                peer: tl::enums::InputPeer::PeerSelf,
                media: input,
            })
            .await
            .map_err(from_invocation)?;
        stored_media(answer, file.size)
    }

    async fn send_media(
        &self,
        token: &BotToken,
        chat_id: i64,
        file: &FileId,
        caption: &str,
    ) -> Result<i32, MtprotoError> {
        let client = self.client(token).await?;
        let (id, access_hash) = file.id();
        let media: tl::enums::InputMedia = if file.file_type.is_photo() {
            tl::types::InputMediaPhoto {
                spoiler: false,
                live_photo: false,
                id: tl::types::InputPhoto {
                    id,
                    access_hash,
                    file_reference: file.file_reference.clone(),
                }
                .into(),
                ttl_seconds: None,
                video: None,
            }
            .into()
        } else {
            tl::types::InputMediaDocument {
                spoiler: false,
                id: tl::types::InputDocument {
                    id,
                    access_hash,
                    file_reference: file.file_reference.clone(),
                }
                .into(),
                video_cover: None,
                video_timestamp: None,
                ttl_seconds: None,
                query: None,
            }
            .into()
        };
        let random_id: i64 = rand_i64();
        let updates = client
            .invoke(&tl::functions::messages::SendMedia {
                silent: false,
                background: false,
                clear_draft: false,
                noforwards: false,
                update_stickersets_order: false,
                invert_media: false,
                allow_paid_floodskip: false,
                peer: self.input_peer(token.bot_id(), chat_id),
                reply_to: None,
                media,
                message: caption.to_owned(),
                random_id,
                reply_markup: None,
                entities: None,
                schedule_date: None,
                schedule_repeat_period: None,
                send_as: None,
                quick_reply_shortcut: None,
                effect: None,
                allow_paid_stars: None,
                suggested_post: None,
            })
            .await
            .map_err(from_invocation)?;
        sent_message_id(&updates, random_id)
            .ok_or_else(|| MtprotoError::Other("Telegram did not say the new message's id".into()))
    }

    async fn resolve_username(
        &self,
        token: &BotToken,
        username: &str,
    ) -> Result<Option<ResolvedPeer>, MtprotoError> {
        let client = self.client(token).await?;
        let answer = client
            .invoke(&tl::functions::contacts::ResolveUsername {
                username: username.trim_start_matches('@').to_owned(),
                referer: None,
            })
            .await;
        let tl::enums::contacts::ResolvedPeer::Peer(r) = match answer {
            Ok(r) => r,
            Err(InvocationError::Rpc(e))
                if e.name == "USERNAME_NOT_OCCUPIED" || e.name == "USERNAME_INVALID" =>
            {
                return Ok(None)
            }
            Err(e) => return Err(from_invocation(e)),
        };
        let found = match r.peer {
            tl::enums::Peer::User(p) => r.users.iter().find_map(|u| match u {
                tl::enums::User::User(u) if u.id == p.user_id => Some(ResolvedPeer {
                    chat_id: u.id,
                    access_hash: u.access_hash,
                    is_bot: u.bot,
                    username: u.username.clone(),
                    first_name: u.first_name.clone(),
                }),
                _ => None,
            }),
            tl::enums::Peer::Chat(p) => Some(ResolvedPeer {
                chat_id: -p.chat_id,
                access_hash: None,
                is_bot: false,
                username: Some(username.trim_start_matches('@').to_owned()),
                first_name: None,
            }),
            tl::enums::Peer::Channel(p) => Some(ResolvedPeer {
                chat_id: CHANNEL_BASE - p.channel_id,
                access_hash: r.chats.iter().find_map(|c| match c {
                    tl::enums::Chat::Channel(c) if c.id == p.channel_id => c.access_hash,
                    _ => None,
                }),
                is_bot: false,
                username: Some(username.trim_start_matches('@').to_owned()),
                first_name: None,
            }),
        };
        if let Some(p) = &found {
            if let Some(h) = p.access_hash {
                self.hashes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((token.bot_id(), p.chat_id), h);
            }
        }
        Ok(found)
    }

    async fn get_messages(
        &self,
        token: &BotToken,
        chat_id: i64,
        ids: &[i32],
    ) -> Result<(Vec<tl::enums::Message>, crate::message::Named), MtprotoError> {
        let client = self.client(token).await?;
        let id: Vec<tl::enums::InputMessage> = ids
            .iter()
            .map(|&id| tl::types::InputMessageId { id }.into())
            .collect();
        let answer = if chat_id <= CHANNEL_BASE {
            client
                .invoke(&tl::functions::channels::GetMessages {
                    channel: self.input_channel(token.bot_id(), chat_id),
                    id,
                })
                .await
        } else {
            client
                .invoke(&tl::functions::messages::GetMessages { id })
                .await
        }
        .map_err(from_invocation)?;
        use crate::message::Named;
        Ok(match answer {
            tl::enums::messages::Messages::Messages(m) => (
                m.messages,
                Named {
                    users: m.users,
                    chats: m.chats,
                },
            ),
            tl::enums::messages::Messages::Slice(m) => (
                m.messages,
                Named {
                    users: m.users,
                    chats: m.chats,
                },
            ),
            tl::enums::messages::Messages::ChannelMessages(m) => (
                m.messages,
                Named {
                    users: m.users,
                    chats: m.chats,
                },
            ),
            tl::enums::messages::Messages::NotModified(_) => (Vec::new(), Named::default()),
        })
    }

    async fn profile_photos(
        &self,
        token: &BotToken,
        user_id: i64,
        offset: i32,
        limit: i32,
    ) -> Result<(i32, Vec<tl::enums::Photo>), MtprotoError> {
        let client = self.client(token).await?;
        let answer = client
            .invoke(&tl::functions::photos::GetUserPhotos {
                user_id: self.input_user(token.bot_id(), user_id),
                offset,
                max_id: 0,
                limit,
            })
            .await
            .map_err(from_invocation)?;
        Ok(match answer {
            tl::enums::photos::Photos::Photos(p) => (p.photos.len() as i32, p.photos),
            tl::enums::photos::Photos::Slice(p) => (p.count, p.photos),
        })
    }

    async fn chat_photos(
        &self,
        token: &BotToken,
        chat_id: i64,
        offset: i32,
        limit: i32,
    ) -> Result<(i32, Vec<tl::enums::Photo>), MtprotoError> {
        let client = self.client(token).await?;
        let answer = client
            .invoke(&tl::functions::messages::Search {
                peer: self.input_peer(token.bot_id(), chat_id),
                q: String::new(),
                from_id: None,
                saved_peer_id: None,
                saved_reaction: None,
                top_msg_id: None,
                filter: tl::enums::MessagesFilter::InputMessagesFilterChatPhotos,
                min_date: 0,
                max_date: 0,
                offset_id: 0,
                add_offset: offset,
                limit,
                max_id: 0,
                min_id: 0,
                hash: 0,
            })
            .await
            .map_err(from_invocation)?;
        use tl::enums::messages::Messages as M;
        let (count, messages) = match answer {
            M::Messages(m) => (m.messages.len() as i32, m.messages),
            M::Slice(m) => (m.count, m.messages),
            M::ChannelMessages(m) => (m.count, m.messages),
            M::NotModified(_) => (0, Vec::new()),
        };
        let photos = messages
            .into_iter()
            .filter_map(|m| match m {
                tl::enums::Message::Service(s) => match s.action {
                    tl::enums::MessageAction::ChatEditPhoto(a) => Some(a.photo),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok((count, photos))
    }

    async fn chat_action(
        &self,
        token: &BotToken,
        chat_id: i64,
        action: tl::enums::SendMessageAction,
    ) -> Result<(), MtprotoError> {
        let client = self.client(token).await?;
        client
            .invoke(&tl::functions::messages::SetTyping {
                peer: self.input_peer(token.bot_id(), chat_id),
                top_msg_id: None,
                action,
            })
            .await
            .map_err(from_invocation)?;
        Ok(())
    }

    async fn full_user(
        &self,
        token: &BotToken,
        user_id: i64,
    ) -> Result<tl::types::users::UserFull, MtprotoError> {
        let client = self.client(token).await?;
        let tl::enums::users::UserFull::Full(full) = client
            .invoke(&tl::functions::users::GetFullUser {
                id: self.input_user(token.bot_id(), user_id),
            })
            .await
            .map_err(from_invocation)?;
        Ok(full)
    }

    async fn full_chat(
        &self,
        token: &BotToken,
        chat_id: i64,
    ) -> Result<tl::types::messages::ChatFull, MtprotoError> {
        let client = self.client(token).await?;
        let answer = if chat_id <= CHANNEL_BASE {
            client
                .invoke(&tl::functions::channels::GetFullChannel {
                    channel: self.input_channel(token.bot_id(), chat_id),
                })
                .await
        } else if chat_id < 0 {
            client
                .invoke(&tl::functions::messages::GetFullChat { chat_id: -chat_id })
                .await
        } else {
            return Err(MtprotoError::NotDownloadable(
                "a user is not a chat: use full_user".into(),
            ));
        }
        .map_err(from_invocation)?;
        let tl::enums::messages::ChatFull::Full(full) = answer;
        Ok(full)
    }

    async fn username(&self, token: &BotToken) -> Result<String, MtprotoError> {
        let client = self.client(token).await?;
        let me = client.get_me().await.map_err(from_invocation)?;
        me.username()
            .map(str::to_owned)
            .ok_or_else(|| MtprotoError::Other("the bot has no username".into()))
    }
}
