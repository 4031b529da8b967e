//! Chats, users, messages (ENHANCED.md): `@username` for users and bots everywhere, resolved
//! over MTProto as the bot and kept per bot in the store; public chats left to the Bot API;
//! unknown names answered as the official API does.

use serde_json::{json, Value};
use telepipe_tests::{get_json, post_json, token, Control, Proc};

async fn register(sandbox: &Proc, what: &str, body: Value) {
    let v = post_json(&format!("{}/control/{what}", sandbox.url), &body).await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_bots_are_found_by_username() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let (bot, other_bot) = (1501, 1502);
    let base = format!("{}/bot{}", gw.url, token(bot));
    register(
        &sandbox,
        "users",
        json!({"id": 777_001, "username": "alice_sb", "first_name": "Alice"}),
    )
    .await;
    register(
        &sandbox,
        "chats",
        json!({"id": -1_001_234_567_890i64, "type": "channel", "title": "News",
               "username": "news_sb", "photos": 2}),
    )
    .await;
    // Both bots exist once they have called (the sandbox's MTProto face knows a bot's key
    // from then on).
    get_json(&format!("{base}/getMe")).await;
    get_json(&format!("{}/bot{}/getMe", gw.url, token(other_bot))).await;

    // A user by username, in any encoding: sent to the user's id.
    let sent = post_json(
        &format!("{base}/sendMessage"),
        &json!({"chat_id": "@Alice_SB", "text": "hi"}),
    )
    .await;
    assert_eq!(sent["result"]["chat"]["id"], 777_001, "{sent}");
    let seen = control.calls(bot, Some("sendMessage")).await.unwrap();
    assert_eq!(seen.last().unwrap()["params"]["chat_id"], "777001");
    let v = get_json(&format!("{base}/getChat?chat_id=%40alice_sb")).await;
    assert_eq!(v["result"]["id"], 777_001, "{v}");
    assert_eq!(v["result"]["username"], "alice_sb");
    assert_eq!(v["result"]["type"], "private");
    let v = get_json(&format!("{base}/getChat?chat_id=@sandbox{other_bot}_bot")).await;
    assert_eq!(v["result"]["id"], other_bot, "{v}");
    // user_id too (getChatMember takes one).
    get_json(&format!(
        "{base}/getChatMember?chat_id=-1001234567890&user_id=@alice_sb"
    ))
    .await;
    let seen = control.calls(bot, Some("getChatMember")).await.unwrap();
    assert_eq!(seen.last().unwrap()["params"]["user_id"], "777001");

    // A public chat's username is the Bot API's own: passed on as written.
    let v = get_json(&format!("{base}/getChat?chat_id=@news_sb")).await;
    assert_eq!(v["result"]["id"], -1_001_234_567_890i64, "{v}");
    let seen = control.calls(bot, Some("getChat")).await.unwrap();
    assert_eq!(seen.last().unwrap()["params"]["chat_id"], "@news_sb");

    // Nobody by that name: the official answer.
    let r = telepipe_tests::client()
        .get(format!("{base}/getChat?chat_id=@nobody_here_sb"))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert_eq!(v["description"], "Bad Request: chat not found");

    // Kept per bot: once the name is someone else's on Telegram, the bot still reaches whom it
    // resolved (until the entry expires).
    let store = gw.store().await.unwrap();
    assert_eq!(
        store.peer(schemas::BotId(bot), "alice_sb").await.unwrap(),
        Some(777_001)
    );
    register(
        &sandbox,
        "users",
        json!({"id": 777_001, "username": "alice_renamed", "first_name": "Alice"}),
    )
    .await;
    let sent = post_json(
        &format!("{base}/sendMessage"),
        &json!({"chat_id": "@alice_sb", "text": "again"}),
    )
    .await;
    assert_eq!(sent["result"]["chat"]["id"], 777_001, "{sent}");

    // The identity the gateway uses on MTProto: the bot itself.
    let v = get_json(&format!("{base}/getBackend")).await;
    assert_eq!(v["result"]["id"], bot, "{v}");
    assert_eq!(v["result"]["type"], "private");
    assert_eq!(v["result"]["username"], format!("sandbox{bot}_bot"));

    // Profile photos: all, a page, by @username, each size usable with getFile.
    register(
        &sandbox,
        "users",
        json!({"id": 777_003, "username": "carol_sb", "photos": 3}),
    )
    .await;
    let v = get_json(&format!("{base}/getProfilePhotos?chat_id=777003")).await;
    assert_eq!(v["result"]["total_count"], 3, "{v}");
    let photos = v["result"]["photos"].as_array().unwrap().clone();
    assert_eq!(photos.len(), 3);
    let v = get_json(&format!(
        "{base}/getProfilePhotos?chat_id=@carol_sb&offset=1&limit=1"
    ))
    .await;
    assert_eq!(v["result"]["total_count"], 3, "{v}");
    // File ids carry a fresh file reference each time, as Telegram's do: the same file is
    // the same file_unique_id.
    let unique = |p: &Value| p[0]["file_unique_id"].clone();
    assert_eq!(v["result"]["photos"].as_array().unwrap().len(), 1);
    assert_eq!(unique(&v["result"]["photos"][0]), unique(&photos[1]));
    let size = &photos[0].as_array().unwrap().last().unwrap();
    assert!(size["width"].as_i64().unwrap() > 0);
    let file = get_json(&format!(
        "{base}/getFile?file_id={}",
        size["file_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(file["ok"], true, "{file}");
    assert_eq!(file["result"]["file_unique_id"], size["file_unique_id"]);
    for (query, code) in [
        ("chat_id=777003&limit=0", 400),
        ("chat_id=-5", 400),
        ("chat_id=@nobody_here_sb", 400),
    ] {
        let r = telepipe_tests::client()
            .get(format!("{base}/getProfilePhotos?{query}"))
            .send()
            .await
            .unwrap();
        telepipe_tests::assert_shaped(r, code).await;
    }

    // A chat's photo history: a channel by @username, a group by id.
    register(
        &sandbox,
        "chats",
        json!({"id": -78, "type": "group", "title": "Group", "photos": 1}),
    )
    .await;
    let v = get_json(&format!("{base}/getProfilePhotos?chat_id=@news_sb")).await;
    assert_eq!(v["result"]["total_count"], 2, "{v}");
    let v = get_json(&format!("{base}/getProfilePhotos?chat_id=-78&limit=5")).await;
    assert_eq!(v["result"]["total_count"], 1, "{v}");
    let size = v["result"]["photos"][0][0].clone();
    let file = get_json(&format!(
        "{base}/getFile?file_id={}",
        size["file_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(file["ok"], true, "{file}");

    // A channel's message, read back by the channel's @username.
    let sent = post_json(
        &format!("{}/bot{}/sendMessage", sandbox.url, token(bot)),
        &json!({"chat_id": -1_001_234_567_890i64, "text": "news"}),
    )
    .await;
    let got = get_json(&format!(
        "{base}/getMessage?chat_id=@news_sb&message_id={}",
        sent["result"]["message_id"]
    ))
    .await;
    assert_eq!(got["result"]["text"], "news", "{got}");
    assert_eq!(got["result"]["chat"], sent["result"]["chat"], "{got}");

    // Telegram does not tell who uploaded a file: said plainly, never guessed.
    let r = telepipe_tests::client()
        .get(format!(
            "{base}/getChatByFile?file_id={}",
            size["file_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert_eq!(
        v["description"],
        "Bad Request: the uploader of this file cannot be determined"
    );
    let r = telepipe_tests::client()
        .get(format!("{base}/getChatByFile?file_id=garbage"))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert_eq!(
        v["description"],
        "Bad Request: wrong file identifier/HTTP URL specified"
    );
}

/// Without MTProto the gateway cannot resolve a user: the call goes as it came, and upstream
/// answers as the official API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mtproto_a_username_is_upstreams() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    register(
        &sandbox,
        "users",
        json!({"id": 777_002, "username": "bob_sb"}),
    )
    .await;
    let r = telepipe_tests::client()
        .get(format!(
            "{}/bot{}/sendMessage?chat_id=@bob_sb&text=hi",
            gw.url,
            token(1503)
        ))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert_eq!(v["description"], "Bad Request: chat not found");

    // getBackend says what to set; with a storage chat, it is that chat.
    let r = telepipe_tests::client()
        .get(format!("{}/bot{}/getBackend", gw.url, token(1503)))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("TELEGRAM_API_ID and TELEGRAM_API_HASH"),
        "{v}"
    );
    let r = telepipe_tests::client()
        .get(format!(
            "{}/bot{}/getProfilePhotos?chat_id=777002",
            gw.url,
            token(1503)
        ))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("TELEGRAM_API_ID"),
        "{v}"
    );
    let r = telepipe_tests::client()
        .get(format!(
            "{}/bot{}/getMessage?chat_id=5&message_id=1",
            gw.url,
            token(1503)
        ))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 400).await;
    assert_eq!(
        v["description"],
        "Bad Request: getMessage needs MTProto: set TELEGRAM_API_ID and TELEGRAM_API_HASH (--api-id, --api-hash)"
    );
    let storage = Proc::gateway(&sandbox.url, &["--storage-chat-id", "-1001000000001"])
        .await
        .unwrap();
    let v = get_json(&format!("{}/bot{}/getBackend", storage.url, token(1503))).await;
    assert_eq!(v["result"]["id"], -1_001_000_000_001i64, "{v}");
    assert_eq!(v["result"]["type"], "supergroup");
}

/// sendChatAction with `duration`: answered at once, sent again every 4 s for the duration
/// (upstream gets the official method), stopped early by a send to the chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_action_shows_for_its_duration() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1504;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let t0 = std::time::Instant::now();
    let v = get_json(&format!(
        "{base}/sendChatAction?chat_id=10&action=typing&duration=6"
    ))
    .await;
    assert_eq!(v, json!({"ok": true, "result": true}));
    assert!(t0.elapsed() < std::time::Duration::from_secs(2), "at once");
    post_json(
        &format!("{base}/sendChatAction"),
        &json!({"chat_id": 11, "action": "upload_photo", "duration": 30}),
    )
    .await;
    get_json(&format!("{base}/sendMessage?chat_id=11&text=done")).await;
    let r = telepipe_tests::client()
        .get(format!(
            "{base}/sendChatAction?chat_id=12&action=typing&duration=0"
        ))
        .send()
        .await
        .unwrap();
    telepipe_tests::assert_shaped(r, 400).await;

    // Past the 4 s repeat, and past when a third (beyond the 6 s) would have gone.
    tokio::time::sleep_until((t0 + std::time::Duration::from_millis(8_500)).into()).await;
    let calls = control.calls(bot, Some("sendChatAction")).await.unwrap();
    let to = |chat: &str| {
        calls
            .iter()
            .filter(|c| c["params"]["chat_id"].to_string().trim_matches('"') == chat)
            .collect::<Vec<_>>()
    };
    assert_eq!(to("10").len(), 2, "{calls:?}");
    assert!(to("10")
        .iter()
        .all(|c| c["params"].get("duration").is_none()));
    assert_eq!(to("11").len(), 1, "stopped by the message: {calls:?}");
    assert!(to("12").is_empty());
}

/// Every file id becomes its file_unique_id: ids carry a fresh file reference each time they
/// are issued, as Telegram's do.
fn same_files(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "file_id")
                .map(|(k, v)| (k.clone(), same_files(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(same_files).collect()),
        other => other.clone(),
    }
}

/// getMessage reads a message back over MTProto as the Bot API shows it: for every kind of
/// message, what getMessage answers is what the send answered (text and entities, captions,
/// inline keyboards, the message replied to, each media kind with its file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_message_answers_what_the_send_answered() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1505;
    let base = format!("{}/bot{}", gw.url, token(bot));
    // Sends go to the sandbox directly: only the reading back is the gateway's.
    let direct = format!("{}/bot{}", sandbox.url, token(bot));
    get_json(&format!("{base}/getMe")).await;
    let read_back = |chat: i64, sent: Value| {
        let base = base.clone();
        async move {
            assert_eq!(sent["ok"], true, "{sent}");
            let id = sent["result"]["message_id"].as_i64().unwrap();
            let got = get_json(&format!("{base}/getMessage?chat_id={chat}&message_id={id}")).await;
            assert_eq!(got["ok"], true, "{got}");
            assert_eq!(
                same_files(&got["result"]),
                same_files(&sent["result"]),
                "read back:\n{}\nsent:\n{}",
                got["result"],
                sent["result"]
            );
            sent["result"].clone()
        }
    };

    let text = read_back(
        55,
        post_json(
            &format!("{direct}/sendMessage"),
            &json!({"chat_id": 55, "text": "bold link code /start @someone",
                "entities": [
                    {"type": "bold", "offset": 0, "length": 4},
                    {"type": "text_link", "offset": 5, "length": 4, "url": "https://example.com/"},
                    {"type": "pre", "offset": 10, "length": 4, "language": "rust"},
                    {"type": "bot_command", "offset": 15, "length": 6},
                    {"type": "mention", "offset": 22, "length": 8}],
                "reply_markup": {"inline_keyboard": [[
                    {"text": "open", "url": "https://example.com/a"},
                    {"text": "press", "callback_data": "p:1"}]]}}),
        )
        .await,
    )
    .await;
    // A reply shows the message it replies to.
    read_back(
        55,
        post_json(
            &format!("{direct}/sendMessage"),
            &json!({"chat_id": 55, "text": "a reply",
                "reply_parameters": {"message_id": text["message_id"]}}),
        )
        .await,
    )
    .await;
    read_back(
        -77,
        post_json(
            &format!("{direct}/sendMessage"),
            &json!({"chat_id": -77, "text": "in a group"}),
        )
        .await,
    )
    .await;

    // Each media kind, with a caption and its entities.
    let kinds: [(&str, &str, &str, &str, Value); 8] = [
        ("sendPhoto", "photo", "photo.jpg", "image/jpeg", json!({})),
        (
            "sendVideo",
            "video",
            "silent.mp4",
            "video/mp4",
            json!({"width": 320, "height": 240, "duration": 3}),
        ),
        (
            "sendAnimation",
            "animation",
            "animation.gif",
            "image/gif",
            json!({"width": 64, "height": 48, "duration": 2}),
        ),
        (
            "sendAudio",
            "audio",
            "audio.mp3",
            "audio/mpeg",
            json!({"duration": 5, "performer": "Band", "title": "Song"}),
        ),
        (
            "sendVoice",
            "voice",
            "audio.m4a",
            "audio/ogg",
            json!({"duration": 4}),
        ),
        (
            "sendVideoNote",
            "video_note",
            "round.mp4",
            "video/mp4",
            json!({"length": 240, "duration": 2}),
        ),
        (
            "sendSticker",
            "sticker",
            "sticker.webp",
            "image/webp",
            json!({}),
        ),
        (
            "sendDocument",
            "document",
            "notes.pdf",
            "application/pdf",
            json!({}),
        ),
    ];
    for (method, param, file, mime, extra) in kinds {
        let part = reqwest::multipart::Part::bytes(telepipe_tests::testdata(file))
            .file_name(file.to_owned())
            .mime_str(mime)
            .unwrap();
        let mut form = reqwest::multipart::Form::new()
            .text("chat_id", "55")
            .part(param.to_owned(), part);
        if method != "sendSticker" && method != "sendVideoNote" {
            form = form.text("caption", "cap tion").text(
                "caption_entities",
                json!([{"type": "italic", "offset": 4, "length": 4}]).to_string(),
            );
        }
        for (k, v) in extra.as_object().unwrap() {
            form = form.text(k.clone(), v.to_string());
        }
        let sent = telepipe_tests::post_multipart(format!("{direct}/{method}"), form).await;
        read_back(55, sent).await;
    }

    // Not there, or another chat's: the official words.
    for query in [
        "chat_id=55&message_id=99999".to_owned(),
        format!("chat_id=56&message_id={}", text["message_id"]),
    ] {
        let r = telepipe_tests::client()
            .get(format!("{base}/getMessage?{query}"))
            .send()
            .await
            .unwrap();
        let v = telepipe_tests::assert_shaped(r, 400).await;
        assert_eq!(
            v["description"], "Bad Request: message not found",
            "{query}"
        );
    }
    let r = telepipe_tests::client()
        .get(format!("{base}/getMessage?chat_id=55"))
        .send()
        .await
        .unwrap();
    telepipe_tests::assert_shaped(r, 400).await;
}
