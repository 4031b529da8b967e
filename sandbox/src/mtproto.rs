//! The sandbox's MTProto face: a real MTProto 2.0 server on loopback that the unmodified
//! grammers client talks to, sharing the Bot API face's world (a file sent through either
//! face is one file, with one file id).
//!
//! Telegram's key exchange cannot be done here (the client pins Telegram's RSA keys), so keys
//! are pre-shared: each bot's auth key is derived from the sandbox's master key
//! ([`telegram::mtproto::sandbox_auth_key`]), the way a gateway pointed at the sandbox derives
//! it. A key is bound to its bot by `auth.importBotAuthorization`, as on Telegram; before that,
//! only connection setup works (`401 AUTH_KEY_UNREGISTERED` otherwise).
//!
//! What it speaks: the "full" transport (length, sequence number, crc32), MTProto 2.0
//! encryption from the server's side (x = 8 out, 0 in), message containers, `gzip_packed`,
//! acks, pings; `invokeWithLayer`/`initConnection` wrappers. Functions: `help.getConfig`,
//! `auth.importBotAuthorization`, `updates.getState`, `users.getUsers` (self), and
//! `upload.getFile` over the world's files with Telegram's offset/limit rules; uploads,
//! media, peers, messages and chat actions in [`crate::mtproto_api`]. Anything else is
//! answered `400 METHOD_NOT_SUPPORTED_BY_SANDBOX`, so a gap shows up as a clear error.

use crate::mtproto_api as api;
use crate::Sandbox;
use grammers_mtproto::transport::{Full, Transport};
use grammers_tl_types::{self as tl, Deserializable, Identifiable, Serializable};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The DC the sandbox's files live on (file ids carry it).
pub const DC_ID: i32 = 2;

const MSG_CONTAINER: u32 = 0x73f1f8dc;
const GZIP_PACKED: u32 = 0x3072cfa1;
const MSGS_ACK: u32 = 0x62d6b459;
const RPC_RESULT: u32 = 0xf35c6d01;
const INVOKE_WITH_LAYER: u32 = 0xda9b0d0d;
const INIT_CONNECTION: u32 = 0xc1cd5ea9;
const INVOKE_WITHOUT_UPDATES: u32 = 0xbf9459b7;

/// A bot and its auth key.
type BotKey = (i64, Arc<[u8; 256]>);

/// Keys the face knows: by key id, the key and its bot.
#[derive(Default)]
pub struct Keys {
    known: Mutex<HashMap<[u8; 8], BotKey>>,
    /// Key ids bound to their bot by a sign-in.
    bound: Mutex<HashMap<[u8; 8], i64>>,
}

pub fn key_id(key: &[u8; 256]) -> [u8; 8] {
    let sha = Sha1::digest(key);
    sha[12..20].try_into().expect("8 bytes")
}

impl Sandbox {
    /// The auth key behind `id`: one of a known bot's derived keys.
    fn key_for(&self, id: &[u8; 8]) -> Option<BotKey> {
        let keys = &self.mtproto_keys;
        if let Some(k) = keys.known.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Some(k.clone());
        }
        // Derive for bots not seen on this face yet (they reached the Bot API face first).
        let bots: Vec<i64> = self.world.lock().bots.keys().copied().collect();
        let mut known = keys.known.lock().unwrap_or_else(|p| p.into_inner());
        for bot in bots {
            let key = telegram::mtproto::sandbox_auth_key(&self.cfg.mtproto_key, bot);
            known.insert(key_id(&key), (bot, Arc::new(key)));
        }
        known.get(id).cloned()
    }
}

/// Serves the MTProto face until `shutdown`.
pub async fn serve(
    sb: Sandbox,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let sb = sb.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = connection(sb, stream) => if let Err(error) = r {
                    tracing::debug!(%error, "MTProto connection ended");
                }
            }
        });
    }
}

/// One client connection: a reader that decrypts and dispatches, a writer that encrypts.
async fn connection(sb: Sandbox, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut transport_in = Full::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    // The writer frames: transport sequence numbers must follow the order on the wire,
    // whatever order concurrent answers are encrypted in.
    let writer = tokio::spawn(async move {
        let mut transport = Full::new();
        while let Some(payload) = out_rx.recv().await {
            let frame = if payload.len() == 4 {
                payload // a transport error code, sent bare
            } else {
                let mut b = grammers_crypto::DequeBuffer::with_capacity(payload.len() + 16, 8);
                b.extend(payload);
                transport.pack(&mut b);
                b.as_ref().to_vec()
            };
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut session: Option<Arc<Session>> = None;
    let result = loop {
        let mut chunk = [0u8; 64 * 1024];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            break Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if !frame_len_ok(&buf) {
                writer.abort();
                return Err(std::io::Error::other("bad transport frame length"));
            }
            let unpacked = match transport_in.unpack(&mut buf) {
                Ok(u) => u,
                Err(grammers_mtproto::transport::Error::MissingBytes) => break,
                Err(e) => {
                    writer.abort();
                    return Err(std::io::Error::other(format!("bad transport frame: {e}")));
                }
            };
            let packet = buf[unpacked.data_range.clone()].to_vec();
            buf.drain(..unpacked.next_offset);
            match decrypt(&sb, &packet) {
                Some((key, plain)) => {
                    let s = match &session {
                        Some(s) if s.id == plain.session_id => s.clone(),
                        _ => {
                            let s = Arc::new(Session::new(
                                plain.session_id,
                                key.clone(),
                                out_tx.clone(),
                            ));
                            session = Some(s.clone());
                            s
                        }
                    };
                    let sb = sb.clone();
                    tokio::spawn(async move {
                        handle_message(&sb, &s, plain.msg_id, plain.body).await;
                    });
                }
                None => {
                    // As Telegram: -404 for a key it does not know, then the connection ends.
                    let _ = out_tx.send((-404i32).to_le_bytes().to_vec()).await;
                    drop(out_tx);
                    let _ = writer.await;
                    return Ok(());
                }
            }
        }
    };
    writer.abort();
    result
}

/// The packets a stream of transport frames carries, decrypted where a key opens them (for
/// the fuzz target `fuzz/fuzz_targets/mtproto.rs`): how many opened.
#[doc(hidden)]
pub fn decode_frames(sb: &Sandbox, stream: &[u8]) -> usize {
    let mut transport_in = Full::new();
    let mut buf = stream.to_vec();
    let mut opened = 0;
    while frame_len_ok(&buf) {
        let Ok(unpacked) = transport_in.unpack(&mut buf) else {
            break;
        };
        let packet = buf[unpacked.data_range.clone()].to_vec();
        buf.drain(..unpacked.next_offset);
        opened += usize::from(decrypt(sb, &packet).is_some());
    }
    opened
}

/// Handles one decrypted message body on a session of its own, as a client's (for the fuzz
/// target): whatever it answers is dropped.
#[doc(hidden)]
pub async fn handle_body(sb: &Sandbox, body: Vec<u8>) {
    let (out, mut answers) = mpsc::channel(1024);
    let key = Key {
        bot: 1,
        id: [0; 8],
        data: Arc::new([7; 256]),
    };
    let s = Session::new(1, key, out);
    let drain = tokio::spawn(async move { while answers.recv().await.is_some() {} });
    handle_message(sb, &s, 1, body).await;
    drop(s);
    let _ = drain.await;
}

/// Whether the next frame's length field is one the full transport can hold: grammers'
/// `Full::unpack` negates a negative length, which overflows at `i32::MIN` (found by
/// `fuzz/fuzz_targets/mtproto.rs`). 12 bytes at least (length, sequence, crc); 16 MiB at most.
fn frame_len_ok(buf: &[u8]) -> bool {
    match buf.get(..4) {
        Some(b) => {
            let len = i32::from_le_bytes(b.try_into().expect("4 bytes"));
            (12..=16 << 20).contains(&len)
        }
        None => true,
    }
}

/// The state shared by one client session's answers.
struct Session {
    id: i64,
    key: Key,
    out: mpsc::Sender<Vec<u8>>,
    /// Content-related messages sent, and the last msg_id used.
    seq: Mutex<(i32, i64)>,
}

#[derive(Clone)]
struct Key {
    bot: i64,
    id: [u8; 8],
    data: Arc<[u8; 256]>,
}

struct Plain {
    session_id: i64,
    msg_id: i64,
    body: Vec<u8>,
}

/// MTProto 2.0 key and iv from a msg_key; `x` is 0 for client→server, 8 for the way back.
fn aes_key_iv(auth_key: &[u8; 256], msg_key: &[u8], x: usize) -> ([u8; 32], [u8; 32]) {
    let a = Sha256::new()
        .chain_update(msg_key)
        .chain_update(&auth_key[x..x + 36])
        .finalize();
    let b = Sha256::new()
        .chain_update(&auth_key[40 + x..40 + x + 36])
        .chain_update(msg_key)
        .finalize();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&a[..8]);
    key[8..24].copy_from_slice(&b[8..24]);
    key[24..].copy_from_slice(&a[24..32]);
    let mut iv = [0u8; 32];
    iv[..8].copy_from_slice(&b[..8]);
    iv[8..24].copy_from_slice(&a[8..24]);
    iv[24..].copy_from_slice(&b[24..32]);
    (key, iv)
}

fn decrypt(sb: &Sandbox, packet: &[u8]) -> Option<(Key, Plain)> {
    if packet.len() < 24 + 32 || !(packet.len() - 24).is_multiple_of(16) {
        return None;
    }
    let id: [u8; 8] = packet[..8].try_into().ok()?;
    let (bot, data) = sb.key_for(&id)?;
    let msg_key = &packet[8..24];
    let (k, iv) = aes_key_iv(&data, msg_key, 0);
    let mut plain = packet[24..].to_vec();
    ige::decrypt(&mut plain, &k, &iv);
    let check = Sha256::new()
        .chain_update(&data[88..120])
        .chain_update(&plain)
        .finalize();
    if &check[8..24] != msg_key {
        return None;
    }
    let le64 = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
    let session_id = le64(&plain[8..16]);
    let msg_id = le64(&plain[16..24]);
    let len = i32::from_le_bytes(plain[28..32].try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    if 32 + len > plain.len() {
        return None;
    }
    Some((
        Key { bot, id, data },
        Plain {
            session_id,
            msg_id,
            body: plain[32..32 + len].to_vec(),
        },
    ))
}

impl Session {
    fn new(id: i64, key: Key, out: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            id,
            key,
            out,
            seq: Mutex::new((0, 0)),
        }
    }

    /// Encrypts and frames one message to the client (content-related: odd seq_no).
    async fn send(&self, body: &[u8], reply: bool) {
        let frame = {
            let mut state = self.seq.lock().unwrap_or_else(|p| p.into_inner());
            let (seq, last_msg_id) = &mut *state;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // Server msg ids grow, and are 1 mod 4 for answers, 3 for the rest.
            let mut msg_id = ((now.as_secs() as i64) << 32) | ((now.subsec_nanos() as i64) << 2);
            if msg_id <= *last_msg_id {
                msg_id = *last_msg_id + 4;
            }
            msg_id = (msg_id & !3) | if reply { 1 } else { 3 };
            *last_msg_id = msg_id;
            let seq_no = *seq * 2 + 1;
            *seq += 1;

            let mut plain = Vec::with_capacity(body.len() + 64);
            plain.extend_from_slice(&0i64.to_le_bytes()); // salt
            plain.extend_from_slice(&self.id.to_le_bytes());
            plain.extend_from_slice(&msg_id.to_le_bytes());
            plain.extend_from_slice(&seq_no.to_le_bytes());
            plain.extend_from_slice(&(body.len() as i32).to_le_bytes());
            plain.extend_from_slice(body);
            let padding = 16 + (16 - plain.len() % 16);
            plain.extend((0..padding).map(|_| rand::random::<u8>()));
            let key = &self.key.data;
            let large = Sha256::new()
                .chain_update(&key[96..128])
                .chain_update(&plain)
                .finalize();
            let msg_key = &large[8..24];
            let (k, iv) = aes_key_iv(key, msg_key, 8);
            ige::encrypt(&mut plain, &k, &iv);
            let mut payload = Vec::with_capacity(plain.len() + 24);
            payload.extend_from_slice(&self.key.id);
            payload.extend_from_slice(msg_key);
            payload.extend_from_slice(&plain);
            payload
        };
        let _ = self.out.send(frame).await;
    }

    async fn answer(&self, req_msg_id: i64, result: Vec<u8>) {
        let mut body = Vec::with_capacity(result.len() + 12);
        body.extend_from_slice(&RPC_RESULT.to_le_bytes());
        body.extend_from_slice(&req_msg_id.to_le_bytes());
        body.extend_from_slice(&result);
        self.send(&body, true).await;
    }

    async fn error(&self, req_msg_id: i64, code: i32, message: &str) {
        let e = tl::enums::RpcError::Error(tl::types::RpcError {
            error_code: code,
            error_message: message.to_owned(),
        });
        self.answer(req_msg_id, e.to_bytes()).await;
    }
}

fn ctor(body: &[u8]) -> u32 {
    body.get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(0)
}

/// A TL `bytes`/`string` at the start of `b`: its content and the length it took.
fn tl_bytes(b: &[u8]) -> Option<(&[u8], usize)> {
    let first = *b.first()? as usize;
    let (len, head) = if first < 254 {
        (first, 1)
    } else {
        let l = u32::from_le_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, 0]) as usize;
        (l, 4)
    };
    let data = b.get(head..head + len)?;
    let total = (head + len).div_ceil(4) * 4;
    Some((data, total))
}

/// The query inside `initConnection`: flags, api_id, six strings, the optional proxy and
/// params, then the query.
fn init_connection_query(body: &[u8]) -> Option<&[u8]> {
    let flags = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
    let mut at = 12;
    for _ in 0..6 {
        at += tl_bytes(body.get(at..)?)?.1;
    }
    if flags & 1 != 0 {
        // inputClientProxy address:string port:int
        at += 4;
        at += tl_bytes(body.get(at..)?)?.1;
        at += 4;
    }
    if flags & 2 != 0 {
        // JSONValue params: not sent by grammers, and unparsed here.
        return None;
    }
    body.get(at..)
}

/// The most bytes a gzip_packed message unpacks to.
const GZIP_MAX: u64 = 16 << 20;

async fn handle_message(sb: &Sandbox, s: &Session, msg_id: i64, body: Vec<u8>) {
    match ctor(&body) {
        MSG_CONTAINER => {
            let count = body
                .get(4..8)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
                .unwrap_or(0);
            let mut at = 8;
            for _ in 0..count.max(0) {
                let Some(head) = body.get(at..at + 16) else {
                    return;
                };
                let inner_id = i64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                // A negative or oversized length ends the container (it overflowed `at + len`
                // before: found by fuzz/fuzz_targets/mtproto.rs).
                let len = i32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
                let Some(end) = usize::try_from(len)
                    .ok()
                    .and_then(|len| (at + 16).checked_add(len))
                else {
                    return;
                };
                let Some(inner) = body.get(at + 16..end) else {
                    return;
                };
                Box::pin(handle_message(sb, s, inner_id, inner.to_vec())).await;
                at = end;
            }
        }
        GZIP_PACKED => {
            let Some((packed, _)) = body.get(4..).and_then(tl_bytes) else {
                return;
            };
            // At most what a message may hold once unpacked: a small gzip bomb must not take
            // the sandbox's memory.
            let mut plain = Vec::new();
            if flate2::read::GzDecoder::new(packed)
                .take(GZIP_MAX)
                .read_to_end(&mut plain)
                .is_ok()
            {
                Box::pin(handle_message(sb, s, msg_id, plain)).await;
            }
        }
        MSGS_ACK => {}
        _ => {
            let answer = call(sb, s, msg_id, &body).await;
            match answer {
                Answer::Result(bytes) => s.answer(msg_id, bytes).await,
                Answer::Error(code, name) => s.error(msg_id, code, &name).await,
                Answer::Raw(bytes) => s.send(&bytes, true).await,
            }
        }
    }
}

pub(crate) enum Answer {
    Result(Vec<u8>),
    Error(i32, String),
    /// A service message sent as it is (a pong).
    Raw(Vec<u8>),
}

/// A function's fields (generated function deserialisers start after the constructor id).
fn parse<T: Deserializable>(body: &[u8]) -> Result<T, Answer> {
    T::from_bytes(body.get(4..).unwrap_or_default())
        .map_err(|_| Answer::Error(400, "INPUT_REQUEST_INVALID".into()))
}

async fn call(sb: &Sandbox, s: &Session, msg_id: i64, body: &[u8]) -> Answer {
    match dispatch(sb, s, msg_id, body).await {
        Ok(a) | Err(a) => a,
    }
}

async fn dispatch(sb: &Sandbox, s: &Session, msg_id: i64, body: &[u8]) -> Result<Answer, Answer> {
    use tl::functions as f;
    let bound = || {
        sb.mtproto_keys
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&s.key.id)
            .copied()
    };
    let signed_in = || bound().ok_or_else(|| Answer::Error(401, "AUTH_KEY_UNREGISTERED".into()));
    Ok(match ctor(body) {
        INVOKE_WITH_LAYER => return Box::pin(dispatch(sb, s, msg_id, &body[8..])).await,
        INVOKE_WITHOUT_UPDATES => return Box::pin(dispatch(sb, s, msg_id, &body[4..])).await,
        INIT_CONNECTION => {
            let query = init_connection_query(body)
                .ok_or_else(|| Answer::Error(400, "CONNECTION_LAYER_INVALID".into()))?;
            return Box::pin(dispatch(sb, s, msg_id, query)).await;
        }
        f::Ping::CONSTRUCTOR_ID => {
            let p: f::Ping = parse(body)?;
            Answer::Raw(pong(msg_id, p.ping_id))
        }
        f::PingDelayDisconnect::CONSTRUCTOR_ID => {
            let p: f::PingDelayDisconnect = parse(body)?;
            Answer::Raw(pong(msg_id, p.ping_id))
        }
        f::help::GetConfig::CONSTRUCTOR_ID => Answer::Result(config().to_bytes()),
        f::auth::ImportBotAuthorization::CONSTRUCTOR_ID => {
            let r: f::auth::ImportBotAuthorization = parse(body)?;
            let token = schemas::BotToken::parse(&r.bot_auth_token).map_err(|_| {
                tracing::info!(
                    len = r.bot_auth_token.len(),
                    "importBotAuthorization: not a token"
                );
                Answer::Error(400, "ACCESS_TOKEN_INVALID".into())
            })?;
            let bot = token.bot_id().0;
            if r.bot_auth_token != crate::token_for(bot) || bot != s.key.bot {
                tracing::info!(bot, key_bot = s.key.bot, "importBotAuthorization refused");
                return Err(Answer::Error(400, "ACCESS_TOKEN_INVALID".into()));
            }
            sb.mtproto_keys
                .bound
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s.key.id, bot);
            let username = {
                let mut w = sb.world.lock();
                w.mtproto_sign_ins += 1;
                w.bot(bot).username.clone()
            };
            let mut out = tl::types::auth::Authorization::CONSTRUCTOR_ID
                .to_le_bytes()
                .to_vec();
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend(bot_user(bot, &username));
            Answer::Result(out)
        }
        f::updates::GetState::CONSTRUCTOR_ID => {
            signed_in()?;
            let now = schemas::now_ms() / 1000;
            Answer::Result(
                tl::enums::updates::State::State(tl::types::updates::State {
                    pts: 1,
                    qts: 0,
                    date: now as i32,
                    seq: 1,
                    unread_count: 0,
                })
                .to_bytes(),
            )
        }
        f::users::GetUsers::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::users::GetUsers = parse(body)?;
            let username = sb.world.lock().bot(bot).username.clone();
            let mut out = 0x1cb5c415u32.to_le_bytes().to_vec(); // vector
            let selves: Vec<_> =
                r.id.iter()
                    .filter(|u| matches!(u, tl::enums::InputUser::UserSelf))
                    .collect();
            out.extend_from_slice(&(selves.len() as i32).to_le_bytes());
            for _ in selves {
                out.extend(bot_user(bot, &username));
            }
            Answer::Result(out)
        }
        f::upload::GetFile::CONSTRUCTOR_ID => {
            signed_in()?;
            let r: f::upload::GetFile = parse(body)?;
            Answer::Result(get_file(sb, &r).await?)
        }
        f::upload::SaveFilePart::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::upload::SaveFilePart = parse(body)?;
            Answer::Result(api::save_part(sb, bot, r.file_id, r.file_part, None, &r.bytes).await?)
        }
        f::upload::SaveBigFilePart::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::upload::SaveBigFilePart = parse(body)?;
            let total = Some(r.file_total_parts);
            Answer::Result(api::save_part(sb, bot, r.file_id, r.file_part, total, &r.bytes).await?)
        }
        f::messages::UploadMedia::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::messages::UploadMedia = parse(body)?;
            Answer::Result(api::upload_media(sb, bot, &r).await?)
        }
        f::messages::SendMedia::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::messages::SendMedia = parse(body)?;
            Answer::Result(api::send_media(sb, bot, &r)?)
        }
        f::contacts::ResolveUsername::CONSTRUCTOR_ID => {
            signed_in()?;
            let r: f::contacts::ResolveUsername = parse(body)?;
            Answer::Result(api::resolve_username(sb, &r.username)?)
        }
        f::messages::GetMessages::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::messages::GetMessages = parse(body)?;
            Answer::Result(api::get_messages(sb, bot, None, &r.id))
        }
        f::channels::GetMessages::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::channels::GetMessages = parse(body)?;
            let tl::enums::InputChannel::Channel(c) = &r.channel else {
                return Err(Answer::Error(400, "CHANNEL_INVALID".into()));
            };
            let chat = -1_000_000_000_000 - c.channel_id;
            Answer::Result(api::get_messages(sb, bot, Some(chat), &r.id))
        }
        f::messages::SetTyping::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::messages::SetTyping = parse(body)?;
            Answer::Result(api::set_typing(sb, bot, &r)?)
        }
        f::users::GetFullUser::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::users::GetFullUser = parse(body)?;
            Answer::Result(api::full_user(sb, bot, &r.id)?)
        }
        f::messages::Search::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::messages::Search = parse(body)?;
            Answer::Result(api::search(sb, bot, &r)?)
        }
        f::messages::GetFullChat::CONSTRUCTOR_ID => {
            signed_in()?;
            let r: f::messages::GetFullChat = parse(body)?;
            Answer::Result(api::full_chat(r.chat_id))
        }
        f::photos::GetUserPhotos::CONSTRUCTOR_ID => {
            let bot = signed_in()?;
            let r: f::photos::GetUserPhotos = parse(body)?;
            Answer::Result(api::user_photos(sb, bot, &r)?)
        }
        other => {
            tracing::info!(
                constructor = format!("{other:#010x}"),
                "MTProto function the sandbox does not implement"
            );
            Answer::Error(400, "METHOD_NOT_SUPPORTED_BY_SANDBOX".into())
        }
    })
}

fn pong(msg_id: i64, ping_id: i64) -> Vec<u8> {
    tl::enums::Pong::Pong(tl::types::Pong { msg_id, ping_id }).to_bytes()
}

/// A bot as itself (`self` and `bot` set).
fn bot_user(bot: i64, username: &str) -> Vec<u8> {
    api::user(bot, &format!("Sandbox Bot {bot}"), username, true, true)
}

/// `upload.getFile` with Telegram's rules: offset a multiple of 4 KiB, limit a multiple of
/// 4 KiB up to 1 MiB, and a request never crossing a 1 MiB boundary.
async fn get_file(sb: &Sandbox, r: &tl::functions::upload::GetFile) -> Result<Vec<u8>, Answer> {
    use tl::enums::InputFileLocation as L;
    let (id, access_hash) = match &r.location {
        L::InputDocumentFileLocation(d) => (d.id, d.access_hash),
        L::InputPhotoFileLocation(p) => (p.id, p.access_hash),
        _ => return Err(Answer::Error(400, "LOCATION_INVALID".into())),
    };
    const KB4: i64 = 4096;
    const MB: i64 = 1024 * 1024;
    if r.offset < 0
        || r.offset % KB4 != 0
        || r.limit <= 0
        || (r.limit as i64) % KB4 != 0
        || r.limit as i64 > MB
        || r.offset / MB != (r.offset + r.limit as i64 - 1) / MB
    {
        return Err(Answer::Error(400, "LIMIT_INVALID".into()));
    }
    let file = sb
        .world
        .lock()
        .files
        .values()
        .find(|f| f.id == id && f.access_hash == access_hash)
        .cloned()
        .ok_or_else(|| Answer::Error(400, "FILE_ID_INVALID".into()))?;
    let mut bytes = Vec::new();
    if (r.offset as u64) < file.size {
        let mut f = tokio::fs::File::open(&file.disk_path)
            .await
            .map_err(|_| Answer::Error(500, "FILE_READ_FAILED".into()))?;
        f.seek(std::io::SeekFrom::Start(r.offset as u64))
            .await
            .map_err(|_| Answer::Error(500, "FILE_READ_FAILED".into()))?;
        let want = (r.limit as u64).min(file.size - r.offset as u64);
        bytes.resize(want as usize, 0);
        f.read_exact(&mut bytes)
            .await
            .map_err(|_| Answer::Error(500, "FILE_READ_FAILED".into()))?;
    }
    sb.world.lock().mtproto_bytes_served += bytes.len() as u64;
    Ok(tl::enums::upload::File::File(tl::types::upload::File {
        r#type: tl::enums::storage::FileType::FilePartial,
        mtime: 0,
        bytes,
    })
    .to_bytes())
}

fn config() -> tl::enums::Config {
    let now = (schemas::now_ms() / 1000) as i32;
    tl::enums::Config::Config(tl::types::Config {
        default_p2p_contacts: false,
        preload_featured_stickers: false,
        revoke_pm_inbox: false,
        blocked_mode: false,
        force_try_ipv6: false,
        date: now,
        expires: now + 3600,
        test_mode: false,
        this_dc: DC_ID,
        // No options: the client keeps the addresses it was given (this face).
        dc_options: Vec::new(),
        dc_txt_domain_name: "sandbox.invalid".into(),
        chat_size_max: 200,
        megagroup_size_max: 200_000,
        forwarded_count_max: 100,
        online_update_period_ms: 210_000,
        offline_blur_timeout_ms: 5000,
        offline_idle_timeout_ms: 30_000,
        online_cloud_timeout_ms: 300_000,
        notify_cloud_delay_ms: 30_000,
        notify_default_delay_ms: 1500,
        push_chat_period_ms: 60_000,
        push_chat_limit: 2,
        edit_time_limit: 172_800,
        revoke_time_limit: i32::MAX,
        revoke_pm_time_limit: i32::MAX,
        rating_e_decay: 2_419_200,
        stickers_recent_limit: 200,
        channels_read_media_period: 604_800,
        tmp_sessions: None,
        call_receive_timeout_ms: 20_000,
        call_ring_timeout_ms: 90_000,
        call_connect_timeout_ms: 30_000,
        call_packet_timeout_ms: 10_000,
        me_url_prefix: "https://t.me/".into(),
        autoupdate_url_prefix: None,
        gif_search_username: None,
        venue_search_username: None,
        img_search_username: None,
        static_maps_provider: None,
        caption_length_max: 1024,
        message_length_max: 4096,
        webfile_dc_id: DC_ID,
        suggested_lang_code: None,
        lang_pack_version: None,
        base_lang_pack_version: None,
        reactions_default: None,
        autologin_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tl_strings() {
        let mut b = Vec::new();
        "abc".to_owned().serialize(&mut b);
        assert_eq!(tl_bytes(&b), Some((&b"abc"[..], 4)));
        let long = "x".repeat(300);
        let mut b = Vec::new();
        long.serialize(&mut b);
        let (data, used) = tl_bytes(&b).unwrap();
        assert_eq!(data.len(), 300);
        assert_eq!(used, b.len());
    }

    #[test]
    fn bot_users_parse_as_grammers_reads_them() {
        let bytes = bot_user(42, "sandbox42_bot");
        let tl::enums::User::User(u) = tl::enums::User::from_bytes(&bytes).unwrap() else {
            panic!("not a user");
        };
        assert!(u.bot && u.is_self);
        assert_eq!(u.id, 42);
        assert_eq!(u.username.as_deref(), Some("sandbox42_bot"));
    }

    /// What the fuzzer found (fuzz/corpus/mtproto/): a frame length of i32::MIN, and a
    /// container whose message length is negative, end the frame or message, not the process.
    #[tokio::test]
    async fn hostile_lengths_are_refused() {
        let dir = std::env::temp_dir().join(format!("tp-mt-{}", std::process::id()));
        let sb = Sandbox::new(crate::SandboxConfig::new(dir.clone())).unwrap();
        let mut frame = i32::MIN.to_le_bytes().to_vec();
        frame.extend([0x10, 0, 0xbe, 0x09, 0xe5]);
        assert_eq!(decode_frames(&sb, &frame), 0);
        let mut container = MSG_CONTAINER.to_le_bytes().to_vec();
        container.extend(1i32.to_le_bytes());
        container.extend([0u8; 12]);
        container.extend((-1i32).to_le_bytes());
        handle_body(&sb, container).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn key_derivation_is_stable_per_bot() {
        let master = [7u8; 32];
        let a = telegram::mtproto::sandbox_auth_key(&master, 1);
        assert_eq!(a, telegram::mtproto::sandbox_auth_key(&master, 1));
        assert_ne!(
            key_id(&a),
            key_id(&telegram::mtproto::sandbox_auth_key(&master, 2))
        );
    }
}
