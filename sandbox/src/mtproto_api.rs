//! The MTProto face's functions beyond connection setup and downloads: uploads
//! (`upload.saveFilePart`, `upload.saveBigFilePart`, `messages.uploadMedia`), sending media
//! (`messages.sendMedia`), peers (`contacts.resolveUsername`, `users.getFullUser`,
//! `messages.getFullChat`, `photos.getUserPhotos`), messages (`messages.getMessages`,
//! `channels.getMessages`) and chat actions (`messages.setTyping`). They work on the same
//! world as the Bot API face: a file uploaded here has a Bot API file id there, a message sent
//! there can be fetched here.
//!
//! Answers are TL bytes. Objects with dozens of optional fields (User, UserFull, ChatFull,
//! Message) are written by hand with only the fields the sandbox knows; unit tests parse each
//! back with grammers' own deserialisers.

use crate::mtproto::{Answer, DC_ID};
use crate::world::StoredFile;
use crate::Sandbox;
use grammers_tl_types::{self as tl, Serializable};
use serde_json::Value;
use sha2::{Digest, Sha256};
use telegram::file_id::FileType;
use tokio::io::AsyncWriteExt;

/// Telegram's cap on parts of one upload (4000 × 512 KiB = 2000 MiB).
pub const MAX_PARTS: i32 = 4000;
const MAX_PART_SIZE: usize = 512 * 1024;
const VECTOR: u32 = 0x1cb5c415;

fn bad(name: &str) -> Answer {
    Answer::Error(400, name.into())
}

/// A TL byte writer for hand-built objects.
#[derive(Default)]
pub(crate) struct W(pub Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        s.to_owned().serialize(&mut self.0);
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn vec(&mut self, items: &[Vec<u8>]) -> &mut Self {
        self.u32(VECTOR).i32(items.len() as i32);
        for i in items {
            self.raw(i);
        }
        self
    }
}

/// `user#b1b8cc83`: access_hash, first_name, username; `self` and `bot` as given.
pub(crate) fn user(id: i64, first_name: &str, username: &str, bot: bool, is_self: bool) -> Vec<u8> {
    let mut flags: u32 = 1 | 1 << 1;
    if !username.is_empty() {
        flags |= 1 << 3;
    }
    if is_self {
        flags |= 1 << 10;
    }
    if bot {
        flags |= 1 << 14;
    }
    let mut w = W::default();
    w.u32(0xb1b8cc83)
        .u32(flags)
        .u32(0)
        .i64(id)
        .i64(access_hash(id))
        .str(first_name);
    if !username.is_empty() {
        w.str(username);
    }
    if bot {
        w.i32(1); // bot_info_version
    }
    w.0
}

/// The access hash the sandbox gives a peer (any is accepted back).
fn access_hash(id: i64) -> i64 {
    id ^ 0x5a5a_5a5a
}

/// A user the sandbox knows, as TL (a bot, or a registered user; others by id alone).
fn known_user(sb: &Sandbox, id: i64) -> Vec<u8> {
    let w = sb.world.lock();
    if let Some(b) = w.bots.get(&id) {
        return user(id, &format!("Sandbox Bot {id}"), &b.username, true, false);
    }
    match w.users.get(&id) {
        Some(u) => user(
            id,
            &u.first_name,
            u.username.as_deref().unwrap_or(""),
            false,
            false,
        ),
        None => user(id, "Sandbox User", "", false, false),
    }
}

/// Bot API chat id of an input peer.
fn chat_id(bot: i64, peer: &tl::enums::InputPeer) -> Result<i64, Answer> {
    use tl::enums::InputPeer as P;
    Ok(match peer {
        P::PeerSelf => bot,
        P::User(u) => u.user_id,
        P::Chat(c) => -c.chat_id,
        P::Channel(c) => -1_000_000_000_000 - c.channel_id,
        _ => return Err(bad("PEER_ID_INVALID")),
    })
}

/// `Peer` TL of a Bot API chat id.
fn peer(chat: i64) -> Vec<u8> {
    let mut w = W::default();
    if chat > 0 {
        w.u32(0x59511722).i64(chat);
    } else if chat > -1_000_000_000_000 {
        w.u32(0x36c6019a).i64(-chat);
    } else {
        w.u32(0xa2a5371e).i64(-1_000_000_000_000 - chat);
    }
    w.0
}

fn parts_dir(sb: &Sandbox, bot: i64, file_id: i64) -> std::path::PathBuf {
    sb.cfg
        .data_dir
        .join("mtproto-parts")
        .join(format!("{bot}-{file_id:x}"))
}

/// `upload.saveFilePart` / `upload.saveBigFilePart`: each part kept as its own file until the
/// upload is used.
pub(crate) async fn save_part(
    sb: &Sandbox,
    bot: i64,
    file_id: i64,
    part: i32,
    total: Option<i32>,
    bytes: &[u8],
) -> Result<Vec<u8>, Answer> {
    if !(0..MAX_PARTS).contains(&part) || total.is_some_and(|t| !(1..=MAX_PARTS).contains(&t)) {
        return Err(bad("FILE_PARTS_INVALID"));
    }
    if bytes.len() > MAX_PART_SIZE {
        return Err(bad("FILE_PART_TOO_BIG"));
    }
    let dir = parts_dir(sb, bot, file_id);
    let io = |_| Answer::Error(500, "FILE_WRITE_FAILED".into());
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    tokio::fs::write(dir.join(part.to_string()), bytes)
        .await
        .map_err(io)?;
    Ok(true.to_bytes())
}

/// Joins an upload's parts into one file of the world.
async fn assemble(
    sb: &Sandbox,
    bot: i64,
    file: &tl::enums::InputFile,
    mime: Option<String>,
    file_type: FileType,
    attributes: serde_json::Map<String, serde_json::Value>,
) -> Result<StoredFile, Answer> {
    use tl::enums::InputFile as F;
    let (id, parts, name) = match file {
        F::File(f) => (f.id, f.parts, f.name.clone()),
        F::Big(f) => (f.id, f.parts, f.name.clone()),
        _ => return Err(bad("FILE_ID_INVALID")),
    };
    if !(1..=MAX_PARTS).contains(&parts) {
        return Err(bad("FILE_PARTS_INVALID"));
    }
    let dir = parts_dir(sb, bot, id);
    let path = sb.temp_path();
    let io = |_| Answer::Error(500, "FILE_WRITE_FAILED".into());
    let mut out = tokio::fs::File::create(&path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for p in 0..parts {
        let Ok(bytes) = tokio::fs::read(dir.join(p.to_string())).await else {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(bad(&format!("FILE_PART_{p}_MISSING")));
        };
        hasher.update(&bytes);
        size += bytes.len() as u64;
        out.write_all(&bytes).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let upload = crate::request::Upload {
        path,
        size,
        sha256: hex::encode(hasher.finalize()),
        file_name: Some(name).filter(|n| !n.is_empty()),
        content_type: mime,
    };
    crate::files::store(sb, &upload, file_type, attributes)
        .await
        .map_err(|_| Answer::Error(500, "FILE_WRITE_FAILED".into()))
}

/// A document's TL attributes under their Bot API names (what a later send shows).
fn kept_attributes(
    attrs: &[tl::enums::DocumentAttribute],
) -> serde_json::Map<String, serde_json::Value> {
    use tl::enums::DocumentAttribute as A;
    let mut out = serde_json::Map::new();
    for a in attrs {
        match a {
            A::Video(v) => {
                out.insert("width".into(), v.w.into());
                out.insert("height".into(), v.h.into());
                out.insert("duration".into(), (v.duration.round() as i64).into());
                if v.round_message {
                    out.insert("length".into(), v.w.into());
                }
            }
            A::Audio(a) => {
                out.insert("duration".into(), a.duration.into());
                if let Some(p) = &a.performer {
                    out.insert("performer".into(), p.clone().into());
                }
                if let Some(t) = &a.title {
                    out.insert("title".into(), t.clone().into());
                }
            }
            _ => {}
        }
    }
    out
}

fn reference() -> Vec<u8> {
    let mut r = vec![1u8];
    r.extend_from_slice(&rand::random::<u32>().to_le_bytes());
    r
}

/// `MessageMedia` of a stored file (`messageMediaPhoto` or `messageMediaDocument`).
fn media(f: &StoredFile, attributes: Vec<tl::enums::DocumentAttribute>) -> tl::enums::MessageMedia {
    let date = (schemas::now_ms() / 1000) as i32;
    if f.file_type == FileType::Photo {
        return tl::types::MessageMediaPhoto {
            spoiler: false,
            live_photo: false,
            photo: Some(
                tl::types::Photo {
                    has_stickers: false,
                    id: f.id,
                    access_hash: f.access_hash,
                    file_reference: reference(),
                    date,
                    sizes: vec![tl::types::PhotoSize {
                        r#type: "y".into(),
                        w: 1280,
                        h: 1280,
                        size: f.size as i32,
                    }
                    .into()],
                    video_sizes: None,
                    dc_id: DC_ID,
                }
                .into(),
            ),
            ttl_seconds: None,
            video: None,
        }
        .into();
    }
    let mut attributes = attributes;
    if let Some(name) = &f.file_name {
        if !attributes
            .iter()
            .any(|a| matches!(a, tl::enums::DocumentAttribute::Filename(_)))
        {
            attributes.push(
                tl::types::DocumentAttributeFilename {
                    file_name: name.clone(),
                }
                .into(),
            );
        }
    }
    tl::types::MessageMediaDocument {
        nopremium: false,
        spoiler: false,
        video: matches!(f.file_type, FileType::Video | FileType::VideoNote),
        round: f.file_type == FileType::VideoNote,
        voice: f.file_type == FileType::Voice,
        document: Some(
            tl::types::Document {
                id: f.id,
                access_hash: f.access_hash,
                file_reference: reference(),
                date,
                mime_type: f
                    .mime_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                size: f.size as i64,
                thumbs: None,
                video_thumbs: None,
                dc_id: DC_ID,
                attributes,
            }
            .into(),
        ),
        alt_documents: None,
        video_cover: None,
        video_timestamp: None,
        ttl_seconds: None,
    }
    .into()
}

/// `messages.uploadMedia`: an uploaded file becomes a file of the world, sent to nobody.
pub(crate) async fn upload_media(
    sb: &Sandbox,
    bot: i64,
    r: &tl::functions::messages::UploadMedia,
) -> Result<Vec<u8>, Answer> {
    use tl::enums::InputMedia as M;
    let (f, attributes) = match &r.media {
        M::UploadedDocument(d) => {
            let t = telegram::mtproto::document_type(&d.attributes);
            let kept = kept_attributes(&d.attributes);
            let f = assemble(sb, bot, &d.file, Some(d.mime_type.clone()), t, kept).await?;
            (f, d.attributes.clone())
        }
        M::UploadedPhoto(p) => {
            let f = assemble(
                sb,
                bot,
                &p.file,
                Some("image/jpeg".into()),
                FileType::Photo,
                Default::default(),
            )
            .await?;
            (f, Vec::new())
        }
        M::Document(_) | M::Photo(_) => {
            let f = by_input_media(sb, &r.media)?;
            (f, Vec::new())
        }
        _ => return Err(bad("MEDIA_INVALID")),
    };
    Ok(media(&f, attributes).to_bytes())
}

/// The world's file an `inputMediaDocument` / `inputMediaPhoto` names.
fn by_input_media(sb: &Sandbox, m: &tl::enums::InputMedia) -> Result<StoredFile, Answer> {
    use tl::enums::InputMedia as M;
    let (id, hash) = match m {
        M::Document(d) => match &d.id {
            tl::enums::InputDocument::Document(d) => (d.id, d.access_hash),
            _ => return Err(bad("MEDIA_INVALID")),
        },
        M::Photo(p) => match &p.id {
            tl::enums::InputPhoto::Photo(p) => (p.id, p.access_hash),
            _ => return Err(bad("MEDIA_INVALID")),
        },
        _ => return Err(bad("MEDIA_INVALID")),
    };
    sb.world
        .lock()
        .files
        .values()
        .find(|f| f.id == id && f.access_hash == hash)
        .cloned()
        .ok_or_else(|| bad("MEDIA_INVALID"))
}

/// `message#7600b9d3` as TL: out, from the bot, text and media.
fn message_tl(
    bot: i64,
    chat: i64,
    id: i64,
    date: i64,
    text: &str,
    media: Option<Vec<u8>>,
) -> Vec<u8> {
    message_tl_with(bot, chat, id, date, text, media, Extras::default())
}

/// What a kept message has besides its text and media.
#[derive(Default)]
struct Extras {
    reply_to: Option<i32>,
    markup: Option<tl::enums::ReplyMarkup>,
    entities: Vec<tl::enums::MessageEntity>,
}

fn message_tl_with(
    bot: i64,
    chat: i64,
    id: i64,
    date: i64,
    text: &str,
    media: Option<Vec<u8>>,
    extras: Extras,
) -> Vec<u8> {
    use tl::Serializable;
    let mut flags: u32 = 1 << 1 | 1 << 8;
    if media.is_some() {
        flags |= 1 << 9;
    }
    if extras.reply_to.is_some() {
        flags |= 1 << 3;
    }
    if extras.markup.is_some() {
        flags |= 1 << 6;
    }
    if !extras.entities.is_empty() {
        flags |= 1 << 7;
    }
    let mut w = W::default();
    w.u32(0x7600b9d3).u32(flags).u32(0).i32(id as i32);
    w.raw(&peer(bot)); // from_id
    w.raw(&peer(chat)); // peer_id
    if let Some(to) = extras.reply_to {
        let header: tl::enums::MessageReplyHeader = tl::types::MessageReplyHeader {
            reply_to_scheduled: false,
            forum_topic: false,
            quote: false,
            reply_to_ephemeral: false,
            reply_to_msg_id: Some(to),
            reply_to_peer_id: None,
            reply_from: None,
            reply_media: None,
            reply_to_top_id: None,
            quote_text: None,
            quote_entities: None,
            quote_offset: None,
            todo_item_id: None,
            poll_option: None,
        }
        .into();
        w.raw(&header.to_bytes());
    }
    w.i32(date as i32).str(text);
    if let Some(m) = media {
        w.raw(&m);
    }
    if let Some(k) = &extras.markup {
        w.raw(&k.to_bytes());
    }
    if !extras.entities.is_empty() {
        let items: Vec<Vec<u8>> = extras.entities.iter().map(|e| e.to_bytes()).collect();
        w.vec(&items);
    }
    w.0
}

/// Bot API MessageEntity objects as TL (the kinds both know).
fn tl_entities(v: &Value) -> Vec<tl::enums::MessageEntity> {
    use tl::types as t;
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let offset = e["offset"].as_i64()? as i32;
            let length = e["length"].as_i64()? as i32;
            Some(match e["type"].as_str()? {
                "mention" => t::MessageEntityMention { offset, length }.into(),
                "hashtag" => t::MessageEntityHashtag { offset, length }.into(),
                "cashtag" => t::MessageEntityCashtag { offset, length }.into(),
                "bot_command" => t::MessageEntityBotCommand { offset, length }.into(),
                "url" => t::MessageEntityUrl { offset, length }.into(),
                "email" => t::MessageEntityEmail { offset, length }.into(),
                "phone_number" => t::MessageEntityPhone { offset, length }.into(),
                "bold" => t::MessageEntityBold { offset, length }.into(),
                "italic" => t::MessageEntityItalic { offset, length }.into(),
                "underline" => t::MessageEntityUnderline { offset, length }.into(),
                "strikethrough" => t::MessageEntityStrike { offset, length }.into(),
                "spoiler" => t::MessageEntitySpoiler { offset, length }.into(),
                "code" => t::MessageEntityCode { offset, length }.into(),
                "pre" => t::MessageEntityPre {
                    offset,
                    length,
                    language: e["language"].as_str().unwrap_or("").into(),
                }
                .into(),
                "text_link" => t::MessageEntityTextUrl {
                    offset,
                    length,
                    url: e["url"].as_str()?.into(),
                }
                .into(),
                "text_mention" => t::MessageEntityMentionName {
                    offset,
                    length,
                    user_id: e["user"]["id"].as_i64()?,
                }
                .into(),
                "custom_emoji" => t::MessageEntityCustomEmoji {
                    offset,
                    length,
                    document_id: e["custom_emoji_id"].as_str()?.parse().ok()?,
                }
                .into(),
                "blockquote" | "expandable_blockquote" => t::MessageEntityBlockquote {
                    collapsed: e["type"] == "expandable_blockquote",
                    offset,
                    length,
                }
                .into(),
                _ => return None,
            })
        })
        .collect()
}

/// A Bot API inline keyboard as TL.
fn tl_markup(v: &Value) -> Option<tl::enums::ReplyMarkup> {
    use tl::enums::InlineButtonType as B;
    use tl::types as t;
    let rows = v["inline_keyboard"].as_array()?;
    let rows = rows
        .iter()
        .map(|row| {
            let buttons = row
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| {
                    let kind: B = if let Some(url) = b["url"].as_str() {
                        t::InlineButtonTypeUrl { url: url.into() }.into()
                    } else if let Some(data) = b["callback_data"].as_str() {
                        t::InlineButtonTypeCallback {
                            requires_password: false,
                            data: data.as_bytes().to_vec(),
                        }
                        .into()
                    } else if let Some(q) = b["switch_inline_query"].as_str() {
                        t::InlineButtonTypeSwitchInline {
                            same_peer: false,
                            query: q.into(),
                            peer_types: None,
                        }
                        .into()
                    } else if let Some(q) = b["switch_inline_query_current_chat"].as_str() {
                        t::InlineButtonTypeSwitchInline {
                            same_peer: true,
                            query: q.into(),
                            peer_types: None,
                        }
                        .into()
                    } else if let Some(text) = b["copy_text"]["text"].as_str() {
                        t::InlineButtonTypeCopy {
                            copy_text: text.into(),
                        }
                        .into()
                    } else {
                        return None;
                    };
                    Some(
                        t::KeyboardInlineButton {
                            style: None,
                            text: b["text"].as_str().unwrap_or("").into(),
                            r#type: kind,
                        }
                        .into(),
                    )
                })
                .collect();
            t::KeyboardInlineButtonRow { buttons }.into()
        })
        .collect();
    Some(
        t::ReplyInlineMarkup {
            force_reply: false,
            rows,
        }
        .into(),
    )
}

/// The document attributes a Bot API media object of `kind` describes.
fn tl_attributes(kind: FileType, o: &Value) -> Vec<tl::enums::DocumentAttribute> {
    use tl::types as t;
    let num = |k: &str| o[k].as_i64().unwrap_or(0) as i32;
    let text = |k: &str| o[k].as_str().map(str::to_owned);
    let video = |round: bool, w: i32, h: i32| -> tl::enums::DocumentAttribute {
        t::DocumentAttributeVideo {
            round_message: round,
            supports_streaming: false,
            nosound: false,
            duration: num("duration") as f64,
            w,
            h,
            preload_prefix_size: None,
            video_start_ts: None,
            video_codec: None,
        }
        .into()
    };
    let audio = |voice: bool| -> tl::enums::DocumentAttribute {
        t::DocumentAttributeAudio {
            voice,
            duration: num("duration"),
            title: text("title"),
            performer: text("performer"),
            waveform: None,
        }
        .into()
    };
    let mut out = match kind {
        FileType::Video => vec![video(false, num("width"), num("height"))],
        FileType::VideoNote => vec![video(true, num("length"), num("length"))],
        FileType::Animation => vec![
            tl::enums::DocumentAttribute::Animated,
            video(false, num("width"), num("height")),
        ],
        FileType::Audio => vec![audio(false)],
        FileType::Voice => vec![audio(true)],
        FileType::Sticker => vec![
            t::DocumentAttributeSticker {
                mask: false,
                alt: text("emoji").unwrap_or_default(),
                stickerset: tl::enums::InputStickerSet::Empty,
                mask_coords: None,
            }
            .into(),
            t::DocumentAttributeImageSize {
                w: num("width"),
                h: num("height"),
            }
            .into(),
        ],
        _ => Vec::new(),
    };
    if let Some(name) = text("file_name") {
        out.push(t::DocumentAttributeFilename { file_name: name }.into());
    }
    out
}

/// A Bot API Message object the world kept, as MTProto's message: its text or caption with
/// their entities, its file with what the Bot API object says of it (sizes, attributes), its
/// inline keyboard, and the message it replies to.
fn stored_message(sb: &Sandbox, bot: i64, m: &Value) -> Vec<u8> {
    use tl::Serializable;
    let chat = m["chat"]["id"].as_i64().unwrap_or(0);
    let id = m["message_id"].as_i64().unwrap_or(0);
    let text = m["text"].as_str().or(m["caption"].as_str()).unwrap_or("");
    let kinds = [
        ("video_note", FileType::VideoNote),
        ("animation", FileType::Animation),
        ("video", FileType::Video),
        ("audio", FileType::Audio),
        ("voice", FileType::Voice),
        ("sticker", FileType::Sticker),
        ("document", FileType::Document),
    ];
    let media = if let Some(sizes) = m["photo"].as_array() {
        let unique = sizes.last().and_then(|s| s["file_unique_id"].as_str());
        let file = unique.and_then(|u| sb.world.lock().files.get(u).cloned());
        file.map(|f| {
            let mut media = media(&f, Vec::new());
            if let tl::enums::MessageMedia::Photo(p) = &mut media {
                if let Some(tl::enums::Photo::Photo(photo)) = &mut p.photo {
                    photo.sizes = sizes
                        .iter()
                        .enumerate()
                        .map(|(n, s)| {
                            let letter = if n + 1 == sizes.len() {
                                "y"
                            } else {
                                ["s", "m", "x"][n.min(2)]
                            };
                            tl::types::PhotoSize {
                                r#type: letter.into(),
                                w: s["width"].as_i64().unwrap_or(0) as i32,
                                h: s["height"].as_i64().unwrap_or(0) as i32,
                                size: s["file_size"].as_i64().unwrap_or(0) as i32,
                            }
                            .into()
                        })
                        .collect();
                }
            }
            media.to_bytes()
        })
    } else {
        kinds.iter().find_map(|(key, kind)| {
            let o = &m[*key];
            let f = sb
                .world
                .lock()
                .files
                .get(o["file_unique_id"].as_str()?)
                .cloned()?;
            let mut f = f;
            if let Some(mime) = o["mime_type"].as_str() {
                f.mime_type = Some(mime.into());
            }
            // The kind the message shows, whatever the file was first stored as.
            f.file_type = *kind;
            Some(media(&f, tl_attributes(*kind, o)).to_bytes())
        })
    };
    let entities = if m["text"].is_string() {
        tl_entities(&m["entities"])
    } else {
        tl_entities(&m["caption_entities"])
    };
    let extras = Extras {
        reply_to: m["reply_to_message"]["message_id"]
            .as_i64()
            .map(|i| i as i32),
        markup: m.get("reply_markup").and_then(tl_markup),
        entities,
    };
    message_tl_with(
        bot,
        chat,
        id,
        m["date"].as_i64().unwrap_or(0),
        text,
        media,
        extras,
    )
}

/// The users and chats a kept message names (its chat), as TL: a private chat's user with the
/// names the Bot API showed, a basic group with its title.
fn named_in(m: &Value) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let c = &m["chat"];
    let id = c["id"].as_i64().unwrap_or(0);
    match c["type"].as_str() {
        Some("private") => (
            Some(user(
                id,
                c["first_name"].as_str().unwrap_or(""),
                c["username"].as_str().unwrap_or(""),
                false,
                false,
            )),
            None,
        ),
        Some("supergroup" | "channel") => {
            use tl::Serializable;
            (None, Some(channel_tl(c).to_bytes()))
        }
        Some("group") => {
            let mut chat = W::default();
            chat.u32(0x41cbf256)
                .u32(0)
                .i64(-id)
                .str(c["title"].as_str().unwrap_or(""))
                .u32(0x37c1011c) // chatPhotoEmpty
                .i32(2)
                .i32(m["date"].as_i64().unwrap_or(0) as i32)
                .i32(1);
            (None, Some(chat.0))
        }
        _ => (None, None),
    }
}

/// `messages.sendMedia` of a file the world has: a message in the chat.
pub(crate) fn send_media(
    sb: &Sandbox,
    bot: i64,
    r: &tl::functions::messages::SendMedia,
) -> Result<Vec<u8>, Answer> {
    let chat = chat_id(bot, &r.peer)?;
    let f = by_input_media(sb, &r.media)?;
    let date = schemas::now_ms() / 1000;
    let (id, from) = {
        let mut w = sb.world.lock();
        let id = w.new_message(bot, chat);
        (id, w.bot(bot).user())
    };
    // Kept as the Bot API face would show it, so both faces see one message.
    let kind = match f.file_type {
        FileType::Photo => "photo",
        FileType::Video => "video",
        FileType::Audio => "audio",
        FileType::Voice => "voice",
        FileType::Animation => "animation",
        FileType::VideoNote => "video_note",
        FileType::Sticker => "sticker",
        _ => "document",
    };
    let object = serde_json::json!({
        "file_id": crate::files::file_id(&f),
        "file_unique_id": f.unique_id,
        "file_size": f.size,
    });
    let mut m = serde_json::json!({
        "message_id": id, "from": from, "chat": {"id": chat, "type": if chat > 0 { "private" } else { "group" }},
        "date": date,
    });
    m[kind] = if kind == "photo" {
        Value::Array(vec![object])
    } else {
        object
    };
    if !r.message.is_empty() {
        m["caption"] = r.message.clone().into();
    }
    sb.world.lock().keep_message(bot, &m);
    let message = message_tl(
        bot,
        chat,
        id,
        date,
        &r.message,
        Some(media(&f, Vec::new()).to_bytes()),
    );
    let mut upd_id = W::default();
    upd_id.u32(0x4e90bfd6).i32(id as i32).i64(r.random_id);
    let mut upd_new = W::default();
    upd_new.u32(0x1f2b0afd).raw(&message).i32(1).i32(1);
    let mut w = W::default();
    w.u32(0x74ae4240)
        .vec(&[upd_id.0, upd_new.0])
        .vec(&[known_user(sb, bot)])
        .vec(&[])
        .i32(date as i32)
        .i32(0);
    Ok(w.0)
}

/// A registered supergroup or channel (its Bot API Chat object) as TL.
fn channel_tl(c: &Value) -> tl::enums::Chat {
    let id = c["id"].as_i64().unwrap_or(0);
    let channel_id = -1_000_000_000_000 - id;
    tl::types::Channel {
        creator: false,
        left: false,
        broadcast: c["type"] == "channel",
        verified: false,
        megagroup: c["type"] == "supergroup",
        restricted: false,
        signatures: false,
        min: false,
        scam: false,
        has_link: false,
        has_geo: false,
        slowmode_enabled: false,
        call_active: false,
        call_not_empty: false,
        fake: false,
        gigagroup: false,
        noforwards: false,
        join_to_send: false,
        join_request: false,
        forum: false,
        stories_hidden: false,
        stories_hidden_min: false,
        stories_unavailable: false,
        signature_profiles: false,
        autotranslation: false,
        broadcast_messages_allowed: false,
        monoforum: false,
        forum_tabs: false,
        id: channel_id,
        access_hash: Some(access_hash(id)),
        title: c["title"].as_str().unwrap_or("").into(),
        username: c["username"].as_str().map(str::to_owned),
        photo: tl::enums::ChatPhoto::Empty,
        date: 0,
        restriction_reason: None,
        admin_rights: None,
        banned_rights: None,
        default_banned_rights: None,
        participants_count: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        emoji_status: None,
        level: None,
        subscription_until_date: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_monoforum_id: None,
        linked_community_id: None,
    }
    .into()
}

/// `contacts.resolveUsername`: bots, registered users, and registered public chats.
pub(crate) fn resolve_username(sb: &Sandbox, username: &str) -> Result<Vec<u8>, Answer> {
    use tl::Serializable;
    let found = sb.world.lock().by_username(username);
    let Some((id, is_bot, first_name, name)) = found else {
        let name = username.trim_start_matches('@');
        let public = sb
            .world
            .lock()
            .public_chats
            .values()
            .find(|c| {
                c["username"]
                    .as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(name))
            })
            .cloned();
        let Some(chat) = public else {
            return Err(bad("USERNAME_NOT_OCCUPIED"));
        };
        let mut w = W::default();
        w.u32(0x7f077ad9)
            .raw(&peer(chat["id"].as_i64().unwrap_or(0)))
            .vec(&[channel_tl(&chat).to_bytes()])
            .vec(&[]);
        return Ok(w.0);
    };
    let mut w = W::default();
    w.u32(0x7f077ad9)
        .raw(&peer(id))
        .vec(&[])
        .vec(&[user(id, &first_name, &name, is_bot, false)]);
    Ok(w.0)
}

/// `messages.getMessages` (no chat named: the bot's private and group chats) and
/// `channels.getMessages` (one channel).
pub(crate) fn get_messages(
    sb: &Sandbox,
    bot: i64,
    channel: Option<i64>,
    ids: &[tl::enums::InputMessage],
) -> Vec<u8> {
    let mut messages = Vec::new();
    let (mut users, mut chats) = (vec![known_user(sb, bot)], Vec::new());
    for m in ids {
        let tl::enums::InputMessage::Id(m) = m else {
            continue;
        };
        let id = m.id as i64;
        let found = {
            let w = sb.world.lock();
            w.messages
                .iter()
                .find(|((b, chat, mid), _)| {
                    *b == bot
                        && *mid == id
                        && match channel {
                            Some(c) => *chat == c,
                            None => *chat > -1_000_000_000_000,
                        }
                })
                .map(|(_, v)| v.clone())
        };
        messages.push(match found {
            Some(v) => {
                let (user, chat) = named_in(&v);
                users.extend(user);
                chats.extend(chat);
                stored_message(sb, bot, &v)
            }
            None => {
                let mut w = W::default();
                w.u32(0x90a6ca84).u32(0).i32(m.id);
                w.0
            }
        });
    }
    let mut w = W::default();
    w.u32(0x1d73e7ea)
        .vec(&messages)
        .vec(&[])
        .vec(&chats)
        .vec(&users);
    w.0
}

/// `messages.setTyping`: recorded, so tests can see the actions a bot showed.
pub(crate) fn set_typing(
    sb: &Sandbox,
    bot: i64,
    r: &tl::functions::messages::SetTyping,
) -> Result<Vec<u8>, Answer> {
    let chat = chat_id(bot, &r.peer)?;
    let action = format!("{:?}", r.action);
    let name = action
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("")
        .to_owned();
    sb.world.lock().chat_actions.push((bot, chat, name));
    Ok(true.to_bytes())
}

fn peer_settings_and_notify() -> Vec<u8> {
    let mut w = W::default();
    w.u32(0xf47741f7).u32(0).u32(0x99622c0c).u32(0);
    w.0
}

/// `users.getFullUser`: `users.userFull` with an empty `userFull`.
pub(crate) fn full_user(
    sb: &Sandbox,
    bot: i64,
    id: &tl::enums::InputUser,
) -> Result<Vec<u8>, Answer> {
    let user_id = match id {
        tl::enums::InputUser::UserSelf => bot,
        tl::enums::InputUser::User(u) => u.user_id,
        _ => return Err(bad("USER_ID_INVALID")),
    };
    let mut full = W::default();
    full.u32(0x06cbe645).u32(0).u32(0).i64(user_id);
    let ps = peer_settings_and_notify();
    full.raw(&ps[..8]).raw(&ps[8..]).i32(0);
    let mut w = W::default();
    w.u32(0x3b6d152e)
        .raw(&full.0)
        .vec(&[])
        .vec(&[known_user(sb, user_id)]);
    Ok(w.0)
}

/// `messages.getFullChat` for a basic group: `messages.chatFull` with its `chat`.
pub(crate) fn full_chat(chat_id: i64) -> Vec<u8> {
    let mut full = W::default();
    full.u32(0x2633421b).u32(0).i64(chat_id).str("");
    full.u32(0x8763d3e1).u32(0).i64(chat_id); // chatParticipantsForbidden
    full.u32(0x99622c0c).u32(0); // notify_settings
    let mut chat = W::default();
    chat.u32(0x41cbf256)
        .u32(0)
        .i64(chat_id)
        .str(&format!("Sandbox Group {chat_id}"))
        .u32(0x37c1011c) // chatPhotoEmpty
        .i32(2)
        .i32((schemas::now_ms() / 1000) as i32)
        .i32(1);
    let mut w = W::default();
    w.u32(0xe5d7d19c).raw(&full.0).vec(&[chat.0]).vec(&[]);
    w.0
}

/// `photos.getUserPhotos`: a user's profile photos, newest first, from `offset`, at most
/// `limit`; `photos.photosSlice` with the total when that is not all of them.
pub(crate) fn user_photos(
    sb: &Sandbox,
    bot: i64,
    r: &tl::functions::photos::GetUserPhotos,
) -> Result<Vec<u8>, Answer> {
    use tl::Serializable;
    let user_id = match &r.user_id {
        tl::enums::InputUser::UserSelf => bot,
        tl::enums::InputUser::User(u) => u.user_id,
        _ => return Err(bad("USER_ID_INVALID")),
    };
    let w = sb.world.lock();
    if !w.users.contains_key(&user_id) && !w.bots.contains_key(&user_id) {
        return Err(bad("USER_ID_INVALID"));
    }
    let all = w.profile_photos.get(&user_id).cloned().unwrap_or_default();
    let from = r.offset.max(0) as usize;
    let photos: Vec<tl::enums::Photo> = all
        .iter()
        .skip(from)
        .take(r.limit.clamp(0, 100) as usize)
        .filter_map(|u| w.files.get(u))
        .map(|f| match media(f, Vec::new()) {
            tl::enums::MessageMedia::Photo(m) => m.photo.expect("a photo's media has it"),
            _ => unreachable!("profile photos are photos"),
        })
        .collect();
    drop(w);
    let answer: tl::enums::photos::Photos = if from == 0 && photos.len() == all.len() {
        tl::types::photos::Photos {
            photos,
            users: Vec::new(),
        }
        .into()
    } else {
        tl::types::photos::PhotosSlice {
            count: all.len() as i32,
            photos,
            users: Vec::new(),
        }
        .into()
    };
    Ok(answer.to_bytes())
}

/// `messages.search` with `inputMessagesFilterChatPhotos`: a chat's photo changes, newest
/// first, as service messages; `messages.messagesSlice` with the total. Other searches find
/// nothing.
pub(crate) fn search(
    sb: &Sandbox,
    bot: i64,
    r: &tl::functions::messages::Search,
) -> Result<Vec<u8>, Answer> {
    use tl::{Deserializable, Serializable};
    let chat = chat_id(bot, &r.peer)?;
    let w = sb.world.lock();
    let all = match r.filter {
        tl::enums::MessagesFilter::InputMessagesFilterChatPhotos => {
            if !w.public_chats.contains_key(&chat) {
                return Err(bad("PEER_ID_INVALID"));
            }
            w.chat_photos.get(&chat).cloned().unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let from = r.add_offset.max(0) as usize;
    let date = (schemas::now_ms() / 1000) as i32;
    let peer_id: tl::enums::Peer = tl::enums::Peer::from_bytes(&peer(chat)).expect("a peer");
    let messages: Vec<tl::enums::Message> = all
        .iter()
        .enumerate()
        .skip(from)
        .take(r.limit.clamp(0, 100) as usize)
        .filter_map(|(n, u)| Some((n, w.files.get(u)?)))
        .map(|(n, f)| {
            let photo = match media(f, Vec::new()) {
                tl::enums::MessageMedia::Photo(m) => m.photo.expect("a photo's media has it"),
                _ => unreachable!("chat photos are photos"),
            };
            tl::types::MessageService {
                out: false,
                mentioned: false,
                media_unread: false,
                reactions_are_possible: false,
                silent: false,
                post: false,
                legacy: false,
                id: (all.len() - n) as i32,
                from_id: None,
                peer_id: peer_id.clone(),
                saved_peer_id: None,
                reply_to: None,
                date,
                action: tl::types::MessageActionChatEditPhoto { photo }.into(),
                reactions: None,
                ttl_period: None,
            }
            .into()
        })
        .collect();
    drop(w);
    let answer: tl::enums::messages::Messages = tl::types::messages::MessagesSlice {
        inexact: false,
        count: all.len() as i32,
        next_rate: None,
        offset_id_offset: None,
        search_flood: None,
        messages,
        topics: Vec::new(),
        chats: Vec::new(),
        users: Vec::new(),
    }
    .into();
    Ok(answer.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use grammers_tl_types::Deserializable;

    #[test]
    fn hand_built_objects_parse_as_grammers_reads_them() {
        let u = user(7, "Ann", "ann_user", false, false);
        assert!(
            matches!(tl::enums::User::from_bytes(&u), Ok(tl::enums::User::User(x)) if x.id == 7 && x.username.as_deref() == Some("ann_user") && !x.bot)
        );
        let m = message_tl(1, 7, 12, 1_700_000_000, "hi", None);
        let tl::enums::Message::Message(m) = tl::enums::Message::from_bytes(&m).unwrap() else {
            panic!("not a message");
        };
        assert_eq!((m.id, m.message.as_str(), m.out), (12, "hi", true));
        let full = tl::enums::messages::ChatFull::from_bytes(&full_chat(42)).unwrap();
        let tl::enums::messages::ChatFull::Full(full) = full;
        assert_eq!(full.chats.len(), 1);
        let mut w = W::default();
        w.u32(0x06cbe645).u32(0).u32(0).i64(9);
        w.raw(&peer_settings_and_notify()).i32(0);
        assert!(tl::enums::UserFull::from_bytes(&w.0).is_ok());
        for chat in [5, -6, -1_000_000_000_007] {
            assert!(tl::enums::Peer::from_bytes(&peer(chat)).is_ok());
        }
    }
}
