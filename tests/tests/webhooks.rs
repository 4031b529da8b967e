//! Webhooks the gateway keeps: any URL (here plain http on loopback), updates polled from
//! Telegram by the gateway and pushed in order, with the secret token; the bot's server down
//! for a while, then back; the gateway killed mid-delivery; a reply body executing a method;
//! drop_pending_updates; getWebhookInfo and getUpdates' 409.

use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telepipe_tests::{
    eventually, get_json, post_json, post_multipart, refusing_port, token, Control, Proc,
};

/// What a bot's webhook server received: (secret header, update).
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A bot's webhook server on `addr`: records each update; answers update 3 with a method call.
async fn bot_server(listener: tokio::net::TcpListener) -> Seen {
    let seen: Seen = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, axum::Json(update): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let secret = headers
                        .get("x-telegram-bot-api-secret-token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let id = update["update_id"].as_i64();
                    seen.lock().unwrap().push((secret, update));
                    if id == Some(3) {
                        axum::Json(json!({"method": "sendMessage", "chat_id": 10, "text": "from the hook"}))
                    } else {
                        axum::Json(json!({}))
                    }
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    seen
}

fn message(n: i64) -> Value {
    json!({"message": {"message_id": n, "date": 0, "chat": {"id": 10, "type": "private"}, "text": format!("m{n}")}})
}

/// A post in the gateway's storage chat, as Telegram would report it.
fn storage_post(chat: i64) -> Value {
    json!({"channel_post": {"message_id": 1, "date": 0,
        "chat": {"id": chat, "type": "channel", "title": "storage"}}})
}

fn ids(seen: &Seen) -> Vec<i64> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, u)| u["update_id"].as_i64().unwrap())
        .collect()
}

async fn wait_for(seen: &Seen, n: usize) -> Vec<i64> {
    eventually(Duration::from_secs(30), || async {
        let got = ids(seen);
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("only {:?} arrived", ids(seen)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_plain_http_gets_every_update_in_order() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1301;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Bots often put their token in their webhook's URL: the bus carries it masked, and the
    // webhook kept is the URL as the bot gave it.
    let url = format!(
        "http://{}/hook?bot={}",
        listener.local_addr().unwrap(),
        token(bot)
    );
    let seen = bot_server(listener).await;

    let v = post_json(
        &format!("{base}/setWebhook"),
        &json!({"url": url, "secret_token": "s3cret", "max_connections": 5,
                "allowed_updates": ["message"]}),
    )
    .await;
    assert_eq!(
        v,
        json!({"ok": true, "result": true, "description": "Webhook was set"})
    );
    // Telegram keeps no webhook of its own: the gateway turned it off to poll.
    assert!(!control
        .calls(bot, Some("deleteWebhook"))
        .await
        .unwrap()
        .is_empty());

    let mut pushed = Vec::new();
    for n in 1..=5 {
        pushed.push(control.push_update(bot, message(n)).await.unwrap());
    }
    let got = wait_for(&seen, 5).await;
    assert_eq!(got, pushed, "in order, each once");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|(s, _)| s.as_deref() == Some("s3cret")));
    assert_eq!(seen.lock().unwrap()[0].1["message"]["text"], "m1");

    // The reply to update 3 was a method call: executed.
    let sent = eventually(Duration::from_secs(10), || async {
        let calls = control.calls(bot, Some("sendMessage")).await.ok()?;
        calls
            .into_iter()
            .find(|c| c["params"]["text"] == "from the hook")
    })
    .await;
    assert!(
        sent.is_some(),
        "the webhook reply's sendMessage reached Telegram"
    );

    let info = get_json(&format!("{base}/getWebhookInfo")).await;
    assert_eq!(info["result"]["url"], url.as_str(), "{info}");
    assert_eq!(info["result"]["pending_update_count"], 0);
    assert_eq!(info["result"]["max_connections"], 5);
    assert_eq!(info["result"]["allowed_updates"], json!(["message"]));
    assert_eq!(info["result"]["has_custom_certificate"], false);

    let r = telepipe_tests::client()
        .get(format!("{base}/getUpdates"))
        .send()
        .await
        .unwrap();
    let v = telepipe_tests::assert_shaped(r, 409).await;
    assert!(v["description"]
        .as_str()
        .unwrap()
        .contains("webhook is active"));

    let v = post_json(&format!("{base}/deleteWebhook"), &json!({})).await;
    assert_eq!(v["description"], "Webhook was deleted", "{v}");
    let info = get_json(&format!("{base}/getWebhookInfo")).await;
    assert_eq!(info["result"]["url"], "", "{info}");
}

/// The bot's server down: updates wait, getWebhookInfo shows them and the error; the gateway
/// is killed and started again meanwhile; the server comes back: every update arrives, in
/// order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_and_a_gateway_restart_lose_nothing() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let mut gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1302;
    // A port with nothing listening yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}/hook");
    let v = post_json(
        &format!("{}/bot{}/setWebhook", gw.url, token(bot)),
        &json!({"url": url}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let mut pushed = Vec::new();
    for n in 1..=3 {
        pushed.push(control.push_update(bot, message(n)).await.unwrap());
    }
    let info_url = |gw: &Proc| format!("{}/bot{}/getWebhookInfo", gw.url, token(bot));
    let info = eventually(Duration::from_secs(20), || async {
        let v = get_json(&info_url(&gw)).await;
        (v["result"]["pending_update_count"] == 3 && v["result"]["last_error_message"].is_string())
            .then_some(v)
    })
    .await
    .expect("pending updates and the last error are shown");
    assert_eq!(info["result"]["last_error_message"], "Connection refused");

    gw.kill_and_restart().await.unwrap();
    for n in 4..=5 {
        pushed.push(control.push_update(bot, message(n)).await.unwrap());
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let seen = bot_server(listener).await;
    let got = wait_for(&seen, 5).await;
    assert_eq!(got, pushed, "in order, none lost");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ids(&seen), pushed, "none twice");
    let info = get_json(&info_url(&gw)).await;
    assert_eq!(info["result"]["pending_update_count"], 0, "{info}");
    assert!(info["result"].get("last_error_message").is_none(), "{info}");
}

/// deleteWebhook with drop_pending_updates forgets what was waiting; a webhook set again later
/// gets only what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_pending_updates_forgets_what_waited() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1303;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let (socket, addr) = refusing_port();
    let url = format!("http://{addr}/hook");
    post_json(&format!("{base}/setWebhook"), &json!({"url": url})).await;
    for n in 1..=2 {
        control.push_update(bot, message(n)).await.unwrap();
    }
    eventually(Duration::from_secs(20), || async {
        let v = get_json(&format!("{base}/getWebhookInfo")).await;
        (v["result"]["pending_update_count"] == 2).then_some(())
    })
    .await
    .expect("two pending");
    let v = post_json(
        &format!("{base}/deleteWebhook"),
        &json!({"drop_pending_updates": true}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let seen = bot_server(socket.listen(64).unwrap()).await;
    post_json(&format!("{base}/setWebhook"), &json!({"url": url})).await;
    let later = control.push_update(bot, message(3)).await.unwrap();
    let got = wait_for(&seen, 1).await;
    assert_eq!(got, vec![later], "only what came after");
}

/// A bot's webhook server on https with a self-signed certificate, speaking just enough
/// HTTP/1.1: records each update's body, answers `{}`, closes.
async fn tls_bot_server(listener: tokio::net::TcpListener, cert: &rcgen::CertifiedKey) -> Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = vec![cert.cert.der().clone()];
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der())
            .unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let seen: Seen = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break buf[end + 4..end + 4 + len].to_vec();
                        }
                    }
                };
                if let Ok(update) = serde_json::from_slice::<Value>(&body) {
                    seen.lock().unwrap().push((None, update));
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    out
}

/// https with a self-signed certificate: refused until the bot gives the certificate with
/// setWebhook (`certificate`), then trusted for that bot's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_given_with_set_webhook_is_trusted() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1304;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let seen = tls_bot_server(listener, &cert).await;

    post_json(&format!("{base}/setWebhook"), &json!({"url": url})).await;
    let first = control.push_update(bot, message(1)).await.unwrap();
    let info = eventually(Duration::from_secs(20), || async {
        let v = get_json(&format!("{base}/getWebhookInfo")).await;
        v["result"]["last_error_message"].is_string().then_some(v)
    })
    .await
    .expect("an unknown certificate is refused");
    assert_eq!(info["result"]["has_custom_certificate"], false);
    assert!(ids(&seen).is_empty());

    let form = reqwest::multipart::Form::new()
        .text("url", url.clone())
        .part(
            "certificate",
            reqwest::multipart::Part::bytes(cert.cert.pem().into_bytes()).file_name("cert.pem"),
        );
    let v: Value = post_multipart(format!("{base}/setWebhook"), form).await;
    assert_eq!(v["ok"], true, "{v}");
    let second = control.push_update(bot, message(2)).await.unwrap();
    assert_eq!(wait_for(&seen, 2).await, vec![first, second]);
    let info = get_json(&format!("{base}/getWebhookInfo")).await;
    assert_eq!(info["result"]["has_custom_certificate"], true, "{info}");
}

/// With `--public-url`, Telegram pushes to the gateway's `/hook/<bot_id>/<secret>` (registered
/// by setWebhook, with the secret as `secret_token`); the gateway does not poll. A push with a
/// wrong secret is refused; a right one reaches the bot's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_url_telegram_pushes_to_the_gateways_hook() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--public-url", "https://gw.example/"])
        .await
        .unwrap();
    let bot = 1305;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = bot_server(listener).await;
    let v = post_json(
        &format!("{}/bot{}/setWebhook", gw.url, token(bot)),
        &json!({"url": url, "secret_token": "mine"}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let set = control.calls(bot, Some("setWebhook")).await.unwrap();
    let registered = set[0]["params"]["url"].as_str().unwrap().to_owned();
    let secret = set[0]["params"]["secret_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefix = format!("https://gw.example/hook/{bot}/");
    assert!(registered.starts_with(&prefix), "{registered}");
    assert_eq!(&registered[prefix.len()..], secret);
    assert_eq!(secret.len(), 32);

    let hook = format!("{}/hook/{bot}/{secret}", gw.url);
    let push = |secret_header: &str, update: Value| {
        telepipe_tests::client()
            .post(&hook)
            .header("x-telegram-bot-api-secret-token", secret_header)
            .json(&update)
            .send()
    };
    let mut update = message(1);
    update["update_id"] = 900.into();
    let r = push("wrong", update.clone()).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = push(&secret, update).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(wait_for(&seen, 1).await, vec![900]);
    // The bot's own secret goes with the push to its URL.
    assert_eq!(seen.lock().unwrap()[0].0.as_deref(), Some("mine"));
    assert!(
        control
            .calls(bot, Some("getUpdates"))
            .await
            .unwrap()
            .is_empty(),
        "no polling while Telegram pushes"
    );
}

/// Updates the gateway caused itself (its storage chat) never reach the bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_from_the_storage_chat_are_filtered_out() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let chat = -1001234567890i64;
    let gw = Proc::gateway(&sandbox.url, &["--storage-chat-id", &chat.to_string()])
        .await
        .unwrap();
    let bot = 1306;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = bot_server(listener).await;
    post_json(
        &format!("{}/bot{}/setWebhook", gw.url, token(bot)),
        &json!({"url": url}),
    )
    .await;
    control.push_update(bot, storage_post(chat)).await.unwrap();
    let kept = control.push_update(bot, message(2)).await.unwrap();
    assert_eq!(wait_for(&seen, 1).await, vec![kept]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ids(&seen),
        vec![kept],
        "the storage chat's post never arrives"
    );
}

/// getUpdates keeps the official semantics, minus the gateway's own traffic: an update from
/// the storage chat is taken out of the answer, the rest is as Telegram gave it, and the
/// offset still confirms past both. Telegram's one answer may reach the bot as two: on a
/// durable bus each update goes through the filter on its own, and a waiting poll answers as
/// soon as the first is kept (a bot asks again with the next offset, as it always does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_updates_leaves_out_the_storage_chat() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let chat = -1001234567890i64;
    let gw = Proc::gateway(&sandbox.url, &["--storage-chat-id", &chat.to_string()])
        .await
        .unwrap();
    let bot = 1307;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let first = control.push_update(bot, message(1)).await.unwrap();
    control.push_update(bot, storage_post(chat)).await.unwrap();
    let last = control.push_update(bot, message(3)).await.unwrap();
    // Read as a bot reads: each answer confirmed by the next call's offset.
    let mut got: Vec<Value> = Vec::new();
    let started = std::time::Instant::now();
    while got.last().and_then(|u| u["update_id"].as_i64()) != Some(last)
        && started.elapsed() < Duration::from_secs(20)
    {
        let offset = got
            .last()
            .and_then(|u| u["update_id"].as_i64())
            .map_or(String::new(), |id| format!("?offset={}&timeout=5", id + 1));
        let v = get_json(&format!("{base}/getUpdates{offset}")).await;
        got.extend(v["result"].as_array().unwrap().iter().cloned());
    }
    let ids: Vec<i64> = got
        .iter()
        .map(|u| u["update_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![first, last], "{got:?}");
    assert_eq!(got[0]["message"]["text"], "m1");
    let v = get_json(&format!("{base}/getUpdates?offset={}", last + 1)).await;
    assert_eq!(v["result"], json!([]), "{v}");
}

/// A bot's server that keeps failing is retried with growing pauses (1 s, 2 s, 4 s, ...), not
/// hammered; new updates wait behind the failing one; the error is shown as Telegram words it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_is_retried_with_backoff() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1308;
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let attempts = attempts.clone();
            move || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("{}/bot{}", gw.url, token(bot));
    post_json(&format!("{base}/setWebhook"), &json!({"url": url})).await;
    control.push_update(bot, message(1)).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (attempts.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await
    .expect("a first attempt");
    for n in 2..=4 {
        control.push_update(bot, message(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Attempts at about 0, 1, 3 and 7 s: three (or four, on a slow machine's clock) in 6 s.
    let n = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&n), "{n} attempts in 6 s");
    let info = get_json(&format!("{base}/getWebhookInfo")).await;
    assert_eq!(info["result"]["pending_update_count"], 4, "{info}");
    assert_eq!(
        info["result"]["last_error_message"],
        "Wrong response from the webhook: 500 Internal Server Error"
    );
}
