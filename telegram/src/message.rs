//! MTProto's messages as the Bot API shows them: what getMessage answers. Pure functions of
//! Telegram's schema (`tl`), so each conversion has a golden test here and the end-to-end
//! tests compare a message read back with the one a send answered.
//!
//! File ids are built from the media (`FileId`), so the bot can use them: getFile takes them,
//! a send takes them. A file id carries a fresh file reference each time, as Telegram's do: the
//! same file keeps its file_unique_id.

use crate::file_id::{FileId, FileType};
use crate::mtproto::{document_type, tl};
use serde_json::{json, Map, Value};

/// Bot API ids of channels and supergroups: -100… (`-1000000000000 - channel_id`).
const CHANNEL_BASE: i64 = -1_000_000_000_000;

/// What MTProto answered with the messages: the users and chats they name.
#[derive(Clone, Debug, Default)]
pub struct Named {
    pub users: Vec<tl::enums::User>,
    pub chats: Vec<tl::enums::Chat>,
}

impl Named {
    fn user(&self, id: i64) -> Option<&tl::types::User> {
        self.users.iter().find_map(|u| match u {
            tl::enums::User::User(u) if u.id == id => Some(u),
            _ => None,
        })
    }

    fn chat(&self, id: i64) -> Option<&tl::enums::Chat> {
        self.chats.iter().find(|c| match c {
            tl::enums::Chat::Chat(c) => c.id == id,
            tl::enums::Chat::Channel(c) => c.id == id,
            tl::enums::Chat::Forbidden(c) => c.id == id,
            tl::enums::Chat::ChannelForbidden(c) => c.id == id,
            _ => false,
        })
    }
}

/// A peer's Bot API chat id.
pub fn chat_id(peer: &tl::enums::Peer) -> i64 {
    match peer {
        tl::enums::Peer::User(p) => p.user_id,
        tl::enums::Peer::Chat(p) => -p.chat_id,
        tl::enums::Peer::Channel(p) => CHANNEL_BASE - p.channel_id,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

/// A Bot API User.
pub fn user(id: i64, named: &Named) -> Value {
    let mut out = json!({"id": id, "is_bot": false, "first_name": ""});
    if let Some(u) = named.user(id) {
        out["is_bot"] = u.bot.into();
        out["first_name"] = u.first_name.clone().unwrap_or_default().into();
        put(&mut out, "last_name", u.last_name.clone());
        put(&mut out, "username", u.username.clone());
        put(&mut out, "language_code", u.lang_code.clone());
    }
    out
}

/// A Bot API Chat.
pub fn chat(peer: &tl::enums::Peer, named: &Named) -> Value {
    let id = chat_id(peer);
    match peer {
        tl::enums::Peer::User(p) => {
            let u = user(p.user_id, named);
            let mut out = json!({"id": id, "type": "private", "first_name": u["first_name"]});
            for k in ["last_name", "username"] {
                if let Some(v) = u.get(k) {
                    out[k] = v.clone();
                }
            }
            out
        }
        tl::enums::Peer::Chat(p) => {
            let title = match named.chat(p.chat_id) {
                Some(tl::enums::Chat::Chat(c)) => c.title.clone(),
                Some(tl::enums::Chat::Forbidden(c)) => c.title.clone(),
                _ => String::new(),
            };
            json!({"id": id, "type": "group", "title": title})
        }
        tl::enums::Peer::Channel(p) => {
            let mut out = json!({"id": id, "type": "channel", "title": ""});
            match named.chat(p.channel_id) {
                Some(tl::enums::Chat::Channel(c)) => {
                    if c.megagroup {
                        out["type"] = "supergroup".into();
                    }
                    out["title"] = c.title.clone().into();
                    put(&mut out, "username", c.username.clone());
                }
                Some(tl::enums::Chat::ChannelForbidden(c)) => {
                    if c.megagroup {
                        out["type"] = "supergroup".into();
                    }
                    out["title"] = c.title.clone().into();
                }
                _ => {}
            }
            out
        }
        #[allow(unreachable_patterns)]
        _ => json!({"id": id, "type": "private", "first_name": ""}),
    }
}

fn put(v: &mut Value, k: &str, x: Option<String>) {
    if let Some(x) = x.filter(|x| !x.is_empty()) {
        v[k] = x.into();
    }
}

/// Message entities as Bot API MessageEntity objects (offsets and lengths are UTF-16 code
/// units in both). Kinds the Bot API has no name for are left out.
pub fn entities(es: &[tl::enums::MessageEntity], named: &Named) -> Vec<Value> {
    use tl::enums::MessageEntity as E;
    es.iter()
        .filter_map(|e| {
            let (kind, extra) = match e {
                E::Mention(_) => ("mention", None),
                E::Hashtag(_) => ("hashtag", None),
                E::Cashtag(_) => ("cashtag", None),
                E::BotCommand(_) => ("bot_command", None),
                E::Url(_) => ("url", None),
                E::Email(_) => ("email", None),
                E::Phone(_) => ("phone_number", None),
                E::Bold(_) => ("bold", None),
                E::Italic(_) => ("italic", None),
                E::Underline(_) => ("underline", None),
                E::Strike(_) => ("strikethrough", None),
                E::Spoiler(_) => ("spoiler", None),
                E::Code(_) => ("code", None),
                E::Pre(p) => (
                    "pre",
                    (!p.language.is_empty()).then(|| ("language", json!(p.language))),
                ),
                E::TextUrl(t) => ("text_link", Some(("url", json!(t.url)))),
                E::MentionName(m) => ("text_mention", Some(("user", user(m.user_id, named)))),
                E::CustomEmoji(c) => (
                    "custom_emoji",
                    Some(("custom_emoji_id", json!(c.document_id.to_string()))),
                ),
                E::Blockquote(b) if b.collapsed => ("expandable_blockquote", None),
                E::Blockquote(_) => ("blockquote", None),
                _ => return None,
            };
            let mut out = json!({"type": kind, "offset": e.offset(), "length": e.length()});
            if let Some((k, v)) = extra {
                out[k] = v;
            }
            Some(out)
        })
        .collect()
}

/// A photo's sizes as Bot API PhotoSizes, smallest first.
pub fn photo_sizes(p: &tl::types::Photo) -> Vec<Value> {
    let mut sizes: Vec<(String, i32, i32, i32)> = p
        .sizes
        .iter()
        .filter_map(|s| match s {
            tl::enums::PhotoSize::Size(s) => Some((s.r#type.clone(), s.w, s.h, s.size)),
            tl::enums::PhotoSize::Progressive(s) => Some((
                s.r#type.clone(),
                s.w,
                s.h,
                s.sizes.last().copied().unwrap_or(0),
            )),
            // Inline thumbnails and vector outlines have no file of their own.
            _ => None,
        })
        .collect();
    sizes.sort_by_key(|s| s.3);
    sizes
        .into_iter()
        .map(|(kind, w, h, size)| {
            let fid = FileId::photo(
                p.dc_id,
                p.file_reference.clone(),
                p.id,
                p.access_hash,
                kind.bytes().next().unwrap_or(b'y'),
            );
            json!({"file_id": fid.encode(), "file_unique_id": fid.unique_id(),
                   "width": w, "height": h, "file_size": size})
        })
        .collect()
}

/// A document as the Bot API object its attributes make it, with that object's field name
/// (`video`, `audio`, `sticker`, ...). An animation is also a `document`, as in the Bot API.
pub fn document(d: &tl::types::Document) -> Vec<(&'static str, Value)> {
    use tl::enums::DocumentAttribute as A;
    let kind = document_type(&d.attributes);
    let fid = FileId::common(kind, d.dc_id, d.file_reference.clone(), d.id, d.access_hash);
    let mut base = json!({"file_id": fid.encode(), "file_unique_id": fid.unique_id()});
    let mut file_name = None;
    let (mut w, mut h, mut duration) = (None, None, None);
    let (mut title, mut performer, mut emoji, mut set) = (None, None, None, None);
    for a in &d.attributes {
        match a {
            A::Filename(f) => file_name = Some(f.file_name.clone()),
            A::ImageSize(s) => (w, h) = (Some(s.w), Some(s.h)),
            A::Video(v) => {
                (w, h) = (Some(v.w), Some(v.h));
                duration = Some(v.duration.round() as i64);
            }
            A::Audio(a) => {
                duration = Some(a.duration as i64);
                title = a.title.clone();
                performer = a.performer.clone();
            }
            A::Sticker(s) => {
                emoji = Some(s.alt.clone());
                set = Some(&s.stickerset);
            }
            _ => {}
        }
    }
    let set_name = set.and_then(|s| match s {
        tl::enums::InputStickerSet::ShortName(n) => Some(n.short_name.clone()),
        _ => None,
    });
    let size = d.size.max(0);
    let mime = Some(d.mime_type.clone());
    let fields = |v: &mut Value, with: &[(&str, Option<Value>)]| {
        for (k, x) in with {
            if let Some(x) = x.clone().filter(|x| x != "" && !x.is_null()) {
                v[*k] = x;
            }
        }
    };
    let (name, with): (&'static str, Vec<(&str, Option<Value>)>) = match kind {
        FileType::Sticker => (
            "sticker",
            vec![
                ("type", Some(json!("regular"))),
                ("width", w.map(Value::from)),
                ("height", h.map(Value::from)),
                (
                    "is_animated",
                    Some(json!(d.mime_type == "application/x-tgsticker")),
                ),
                ("is_video", Some(json!(d.mime_type == "video/webm"))),
                ("emoji", emoji.map(Value::from)),
                ("set_name", set_name.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
        FileType::VideoNote => (
            "video_note",
            vec![
                ("length", w.map(Value::from)),
                ("duration", duration.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
        FileType::Voice => (
            "voice",
            vec![
                ("duration", duration.map(Value::from)),
                ("mime_type", mime.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
        FileType::Audio => (
            "audio",
            vec![
                ("duration", duration.map(Value::from)),
                ("performer", performer.map(Value::from)),
                ("title", title.map(Value::from)),
                ("file_name", file_name.clone().map(Value::from)),
                ("mime_type", mime.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
        FileType::Video | FileType::Animation => (
            if kind == FileType::Video {
                "video"
            } else {
                "animation"
            },
            vec![
                ("width", w.map(Value::from)),
                ("height", h.map(Value::from)),
                ("duration", duration.map(Value::from)),
                ("file_name", file_name.clone().map(Value::from)),
                ("mime_type", mime.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
        _ => (
            "document",
            vec![
                ("file_name", file_name.clone().map(Value::from)),
                ("mime_type", mime.map(Value::from)),
                ("file_size", Some(size.into())),
            ],
        ),
    };
    fields(&mut base, &with);
    let mut out = vec![(name, base.clone())];
    if kind == FileType::Animation {
        let mut doc = json!({"file_id": base["file_id"], "file_unique_id": base["file_unique_id"]});
        fields(
            &mut doc,
            &[
                ("file_name", file_name.map(Value::from)),
                ("mime_type", Some(d.mime_type.clone().into())),
                ("file_size", Some(size.into())),
            ],
        );
        out.push(("document", doc));
    }
    out
}

/// Where a forwarded message came from, as a Bot API MessageOrigin.
fn origin(f: &tl::types::MessageFwdHeader, named: &Named) -> Value {
    match &f.from_id {
        Some(tl::enums::Peer::Channel(_)) if f.channel_post.is_some() => {
            let peer = f.from_id.as_ref().expect("matched");
            let mut o = json!({"type": "channel", "date": f.date, "chat": chat(peer, named),
                "message_id": f.channel_post});
            put(&mut o, "author_signature", f.post_author.clone());
            o
        }
        Some(tl::enums::Peer::User(p)) => {
            json!({"type": "user", "date": f.date, "sender_user": user(p.user_id, named)})
        }
        Some(peer) => {
            let mut o = json!({"type": "chat", "date": f.date, "sender_chat": chat(peer, named)});
            put(&mut o, "author_signature", f.post_author.clone());
            o
        }
        None => json!({"type": "hidden_user", "date": f.date,
            "sender_user_name": f.from_name.clone().unwrap_or_default()}),
    }
}

/// An inline keyboard as the Bot API's InlineKeyboardMarkup (other markups are not shown
/// with a sent message).
fn reply_markup(m: &tl::enums::ReplyMarkup) -> Option<Value> {
    use tl::enums::InlineButtonType as B;
    let tl::enums::ReplyMarkup::ReplyInlineMarkup(m) = m else {
        return None;
    };
    let rows: Vec<Value> = m
        .rows
        .iter()
        .map(|tl::enums::KeyboardInlineButtonRow::Row(r)| {
            Value::Array(
                r.buttons
                    .iter()
                    .map(|tl::enums::KeyboardInlineButton::Button(b)| {
                        let mut o = json!({"text": b.text});
                        match &b.r#type {
                            B::Url(u) => o["url"] = u.url.clone().into(),
                            B::UrlAuth(u) => o["login_url"] = json!({"url": u.url}),
                            B::WebView(u) => o["web_app"] = json!({"url": u.url}),
                            B::Callback(c) => {
                                o["callback_data"] =
                                    String::from_utf8_lossy(&c.data).into_owned().into()
                            }
                            B::Game => o["callback_game"] = json!({}),
                            B::Buy => o["pay"] = true.into(),
                            B::SwitchInline(s) if s.same_peer => {
                                o["switch_inline_query_current_chat"] = s.query.clone().into()
                            }
                            B::SwitchInline(s) => o["switch_inline_query"] = s.query.clone().into(),
                            B::Copy(c) => o["copy_text"] = json!({"text": c.copy_text}),
                            B::UserProfile(u) => {
                                o["url"] = format!("tg://user?id={}", u.user_id).into()
                            }
                            _ => {}
                        }
                        o
                    })
                    .collect(),
            )
        })
        .collect();
    Some(json!({ "inline_keyboard": rows }))
}

/// A message as the Bot API's Message. `reply` is the message it replies to, converted
/// already (the Bot API shows it whole, one level deep).
pub fn message(m: &tl::types::Message, named: &Named, reply: Option<Value>) -> Value {
    let mut out = Map::new();
    out.insert("message_id".into(), m.id.into());
    let peer_chat = chat(&m.peer_id, named);
    match &m.from_id {
        Some(tl::enums::Peer::User(p)) => {
            out.insert("from".into(), user(p.user_id, named));
        }
        Some(other) => {
            out.insert("sender_chat".into(), chat(other, named));
        }
        // A private chat's messages carry no from_id: the account's own (`out`) are from it,
        // the others from the chat's user.
        None => {
            let me = named.users.iter().find_map(|u| match u {
                tl::enums::User::User(u) if u.is_self => Some(u.id),
                _ => None,
            });
            if let (true, Some(me)) = (m.out, me) {
                out.insert("from".into(), user(me, named));
            } else if let tl::enums::Peer::User(p) = &m.peer_id {
                out.insert("from".into(), user(p.user_id, named));
            } else if matches!(&m.peer_id, tl::enums::Peer::Channel(_)) {
                out.insert("sender_chat".into(), peer_chat.clone());
            }
        }
    }
    out.insert("chat".into(), peer_chat);
    out.insert("date".into(), m.date.into());
    if let Some(d) = m.edit_date {
        out.insert("edit_date".into(), d.into());
    }
    if let Some(tl::enums::MessageFwdHeader::Header(f)) = &m.fwd_from {
        out.insert("forward_origin".into(), origin(f, named));
    }
    if let Some(r) = reply {
        out.insert("reply_to_message".into(), r);
    }
    if let Some(g) = m.grouped_id {
        out.insert("media_group_id".into(), g.to_string().into());
    }
    if let Some(a) = m.post_author.clone().filter(|a| !a.is_empty()) {
        out.insert("author_signature".into(), a.into());
    }
    let with_media = match &m.media {
        Some(tl::enums::MessageMedia::Photo(p)) => match &p.photo {
            Some(tl::enums::Photo::Photo(p)) => {
                out.insert("photo".into(), Value::Array(photo_sizes(p)));
                true
            }
            _ => false,
        },
        Some(tl::enums::MessageMedia::Document(d)) => match &d.document {
            Some(tl::enums::Document::Document(d)) => {
                for (k, v) in document(d) {
                    out.insert(k.into(), v);
                }
                true
            }
            _ => false,
        },
        _ => false,
    };
    let es = m
        .entities
        .as_deref()
        .map(|e| entities(e, named))
        .unwrap_or_default();
    let (text, text_entities) = if with_media {
        ("caption", "caption_entities")
    } else {
        ("text", "entities")
    };
    if !m.message.is_empty() {
        out.insert(text.into(), m.message.clone().into());
    }
    if !es.is_empty() {
        out.insert(text_entities.into(), Value::Array(es));
    }
    if let Some(k) = m.reply_markup.as_ref().and_then(reply_markup) {
        out.insert("reply_markup".into(), k);
    }
    Value::Object(out)
}

/// The id of the message `m` replies to, in the same chat.
pub fn reply_to_id(m: &tl::types::Message) -> Option<i32> {
    match &m.reply_to {
        Some(tl::enums::MessageReplyHeader::Header(h)) if h.reply_to_peer_id.is_none() => {
            h.reply_to_msg_id
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tl::types as t;

    fn named() -> Named {
        Named {
            users: vec![t::User {
                is_self: false,
                contact: false,
                mutual_contact: false,
                deleted: false,
                bot: false,
                bot_chat_history: false,
                bot_nochats: false,
                verified: false,
                restricted: false,
                min: false,
                bot_inline_geo: false,
                support: false,
                scam: false,
                apply_min_photo: false,
                fake: false,
                bot_attach_menu: false,
                premium: false,
                attach_menu_enabled: false,
                bot_can_edit: false,
                close_friend: false,
                stories_hidden: false,
                stories_unavailable: false,
                contact_require_premium: false,
                bot_business: false,
                bot_has_main_app: false,
                bot_forum_view: false,
                bot_forum_can_manage_topics: false,
                bot_can_manage_bots: false,
                bot_guestchat: false,
                bot_guard: false,
                linked_community_id: None,
                id: 7,
                access_hash: None,
                first_name: Some("Ann".into()),
                last_name: None,
                username: Some("ann".into()),
                phone: None,
                photo: None,
                status: None,
                bot_info_version: None,
                restriction_reason: None,
                bot_inline_placeholder: None,
                lang_code: None,
                emoji_status: None,
                usernames: None,
                stories_max_id: None,
                color: None,
                profile_color: None,
                bot_active_users: None,
                bot_verification_icon: None,
                send_paid_messages_stars: None,
            }
            .into()],
            chats: Vec::new(),
        }
    }

    /// A plain text message in `peer`, without a sender.
    fn sample(peer: tl::enums::Peer) -> t::Message {
        t::Message {
            out: false,
            mentioned: false,
            media_unread: false,
            silent: false,
            post: false,
            from_scheduled: false,
            legacy: false,
            edit_hide: false,
            pinned: false,
            noforwards: false,
            invert_media: false,
            offline: false,
            video_processing_pending: false,
            paid_suggested_post_stars: false,
            paid_suggested_post_ton: false,
            id: 1,
            from_id: None,
            from_boosts_applied: None,
            from_rank: None,
            peer_id: peer,
            saved_peer_id: None,
            fwd_from: None,
            via_bot_id: None,
            via_business_bot_id: None,
            guestchat_via_from: None,
            reply_to: None,
            date: 0,
            message: "hi".into(),
            media: None,
            reply_markup: None,
            entities: None,
            views: None,
            forwards: None,
            replies: None,
            edit_date: None,
            post_author: None,
            grouped_id: None,
            reactions: None,
            restriction_reason: None,
            ttl_period: None,
            quick_reply_shortcut_id: None,
            effect: None,
            factcheck: None,
            report_delivery_until_date: None,
            paid_message_stars: None,
            suggested_post: None,
            schedule_repeat_period: None,
            summary_from_language: None,
            rich_message: None,
        }
    }

    fn document(attributes: Vec<tl::enums::DocumentAttribute>, mime: &str) -> t::Document {
        t::Document {
            id: 1,
            access_hash: 2,
            file_reference: vec![1],
            date: 0,
            mime_type: mime.into(),
            size: 1000,
            thumbs: None,
            video_thumbs: None,
            dc_id: 2,
            attributes,
        }
    }

    fn kinds(d: &t::Document) -> Vec<&'static str> {
        super::document(d).into_iter().map(|(k, _)| k).collect()
    }

    /// Each media kind is named by its attributes, with the fields the Bot API gives it.
    #[test]
    fn documents_are_the_kind_their_attributes_say() {
        let video = |round: bool| -> tl::enums::DocumentAttribute {
            t::DocumentAttributeVideo {
                round_message: round,
                supports_streaming: false,
                nosound: false,
                duration: 2.6,
                w: 320,
                h: 240,
                preload_prefix_size: None,
                video_start_ts: None,
                video_codec: None,
            }
            .into()
        };
        let audio = |voice: bool| -> tl::enums::DocumentAttribute {
            t::DocumentAttributeAudio {
                voice,
                duration: 5,
                title: Some("Song".into()),
                performer: None,
                waveform: None,
            }
            .into()
        };
        let name: tl::enums::DocumentAttribute = t::DocumentAttributeFilename {
            file_name: "a.bin".into(),
        }
        .into();
        assert_eq!(kinds(&document(vec![video(false)], "video/mp4")), ["video"]);
        assert_eq!(
            kinds(&document(vec![video(true)], "video/mp4")),
            ["video_note"]
        );
        assert_eq!(
            kinds(&document(
                vec![tl::enums::DocumentAttribute::Animated, video(false)],
                "video/mp4"
            )),
            ["animation", "document"]
        );
        assert_eq!(
            kinds(&document(vec![audio(false)], "audio/mpeg")),
            ["audio"]
        );
        assert_eq!(kinds(&document(vec![audio(true)], "audio/ogg")), ["voice"]);
        assert_eq!(kinds(&document(vec![name.clone()], "x/y")), ["document"]);

        let (_, v) =
            super::document(&document(vec![video(false), name.clone()], "video/mp4")).remove(0);
        let fid = FileId::common(FileType::Video, 2, vec![1], 1, 2);
        assert_eq!(
            v,
            json!({"file_id": fid.encode(), "file_unique_id": fid.unique_id(), "width": 320,
                "height": 240, "duration": 3, "file_name": "a.bin", "mime_type": "video/mp4",
                "file_size": 1000})
        );
        let (_, v) = super::document(&document(vec![video(true)], "video/mp4")).remove(0);
        assert_eq!(
            (v["length"].clone(), v["duration"].clone()),
            (json!(320), json!(3))
        );
        assert!(v.get("mime_type").is_none());
        let (_, v) = super::document(&document(vec![audio(false)], "audio/mpeg")).remove(0);
        assert_eq!(v["title"], "Song");
        assert!(v.get("performer").is_none());
        let sticker: tl::enums::DocumentAttribute = t::DocumentAttributeSticker {
            mask: false,
            alt: "🙂".into(),
            stickerset: t::InputStickerSetShortName {
                short_name: "pack".into(),
            }
            .into(),
            mask_coords: None,
        }
        .into();
        let (k, v) = super::document(&document(vec![sticker], "application/x-tgsticker")).remove(0);
        assert_eq!(k, "sticker");
        assert_eq!(v["emoji"], "🙂");
        assert_eq!(v["set_name"], "pack");
        assert_eq!(v["is_animated"], true);
        assert_eq!(v["is_video"], false);
    }

    /// A private chat's message without from_id is the account's own when it is `out`.
    #[test]
    fn an_outgoing_private_message_is_from_the_account() {
        let mut n = named();
        if let tl::enums::User::User(u) = &mut n.users[0] {
            u.is_self = true;
        }
        let chat = || -> tl::enums::Peer { t::PeerUser { user_id: 55 }.into() };
        let probe = |out: bool| -> Value {
            let mut m = sample(chat());
            m.out = out;
            super::message(&m, &n, None)["from"]["id"].clone()
        };
        assert_eq!(probe(true), 7);
        assert_eq!(probe(false), 55);
    }

    #[test]
    fn photos_list_their_sizes_smallest_first() {
        let size = |kind: &str, w: i32, size: i32| -> tl::enums::PhotoSize {
            t::PhotoSize {
                r#type: kind.into(),
                w,
                h: w,
                size,
            }
            .into()
        };
        let p = t::Photo {
            has_stickers: false,
            id: 5,
            access_hash: 6,
            file_reference: vec![1],
            date: 0,
            sizes: vec![
                size("y", 1280, 90_000),
                t::PhotoStrippedSize {
                    r#type: "i".into(),
                    bytes: vec![1, 2],
                }
                .into(),
                size("m", 320, 9_000),
            ],
            video_sizes: None,
            dc_id: 2,
        };
        let sizes = photo_sizes(&p);
        assert_eq!(sizes.len(), 2, "the inline thumbnail has no file");
        assert_eq!(sizes[0]["width"], 320);
        let fid = FileId::photo(2, vec![1], 5, 6, b'y');
        assert_eq!(sizes[1]["file_unique_id"], fid.unique_id());
        assert_eq!(sizes[1]["file_size"], 90_000);
    }

    #[test]
    fn entities_origins_and_keyboards_take_the_bot_apis_names() {
        let es: Vec<tl::enums::MessageEntity> = vec![
            t::MessageEntityMentionName {
                offset: 0,
                length: 3,
                user_id: 7,
            }
            .into(),
            t::MessageEntityBlockquote {
                collapsed: true,
                offset: 4,
                length: 2,
            }
            .into(),
            t::MessageEntityCustomEmoji {
                offset: 6,
                length: 2,
                document_id: 99,
            }
            .into(),
            t::MessageEntityBankCard {
                offset: 8,
                length: 4,
            }
            .into(),
        ];
        let out = entities(&es, &named());
        assert_eq!(
            Value::Array(out),
            json!([
                {"type": "text_mention", "offset": 0, "length": 3,
                 "user": {"id": 7, "is_bot": false, "first_name": "Ann", "username": "ann"}},
                {"type": "expandable_blockquote", "offset": 4, "length": 2},
                {"type": "custom_emoji", "offset": 6, "length": 2, "custom_emoji_id": "99"},
            ])
        );
        let fwd = |from_id: Option<tl::enums::Peer>, post: Option<i32>| t::MessageFwdHeader {
            imported: false,
            saved_out: false,
            from_id,
            from_name: Some("Hidden".into()),
            date: 10,
            channel_post: post,
            post_author: None,
            saved_from_peer: None,
            saved_from_msg_id: None,
            saved_from_id: None,
            saved_from_name: None,
            saved_date: None,
            psa_type: None,
        };
        assert_eq!(
            origin(&fwd(None, None), &named()),
            json!({"type": "hidden_user", "date": 10, "sender_user_name": "Hidden"})
        );
        assert_eq!(
            origin(
                &fwd(Some(t::PeerUser { user_id: 7 }.into()), None),
                &named()
            )["sender_user"]["first_name"],
            "Ann"
        );
        let channel = origin(
            &fwd(Some(t::PeerChannel { channel_id: 5 }.into()), Some(42)),
            &named(),
        );
        assert_eq!(channel["type"], "channel");
        assert_eq!(channel["chat"]["id"], -1_000_000_000_005i64);
        assert_eq!(channel["message_id"], 42);
        let button =
            |text: &str, kind: tl::enums::InlineButtonType| -> tl::enums::KeyboardInlineButton {
                t::KeyboardInlineButton {
                    style: None,
                    text: text.into(),
                    r#type: kind,
                }
                .into()
            };
        let markup: tl::enums::ReplyMarkup = t::ReplyInlineMarkup {
            force_reply: false,
            rows: vec![t::KeyboardInlineButtonRow {
                buttons: vec![
                    button(
                        "a",
                        t::InlineButtonTypeCallback {
                            requires_password: false,
                            data: b"x:1".to_vec(),
                        }
                        .into(),
                    ),
                    button(
                        "b",
                        t::InlineButtonTypeSwitchInline {
                            same_peer: true,
                            query: "q".into(),
                            peer_types: None,
                        }
                        .into(),
                    ),
                    button("c", tl::enums::InlineButtonType::Buy),
                ],
            }
            .into()],
        }
        .into();
        assert_eq!(
            reply_markup(&markup).unwrap(),
            json!({"inline_keyboard": [[
                {"text": "a", "callback_data": "x:1"},
                {"text": "b", "switch_inline_query_current_chat": "q"},
                {"text": "c", "pay": true}]]})
        );
    }
}
