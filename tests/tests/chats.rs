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
}
