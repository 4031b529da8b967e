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
               "username": "news_sb"}),
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
