//! Flood control (`--flood-control`, ENHANCED.md "Flood control (opt-in)") against a sandbox
//! that enforces Telegram's limits (`--flood-limits`): bursts leave within the limits and in
//! order, an upstream 429 is absorbed, a wait past the deadline is Telegram's own 429.

use serde_json::json;
use std::time::{Duration, Instant};
use telepipe_tests::{assert_shaped, client, get_json, token, Control, Proc};

/// The texts of the bot's sendMessage calls the sandbox received, oldest first.
async fn sent_texts(control: &Control, bot: i64) -> Vec<String> {
    control
        .calls(bot, Some("sendMessage"))
        .await
        .unwrap()
        .iter()
        .map(|c| c["params"]["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn world() -> (Proc, Control, Proc) {
    let sandbox = Proc::sandbox(&["--flood-limits"]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--flood-control"])
        .await
        .unwrap();
    (sandbox, control, gw)
}

/// Six messages at once to one private chat: all answered 200 (the sandbox would refuse the
/// fourth), sent in the order they came, the last about three seconds in (a burst of three,
/// then one a second). Reads pass at once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_one_chat_leaves_within_the_limits_in_order() {
    let (_sandbox, control, gw) = world().await;
    let bot = 1701;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let started = Instant::now();
    let mut sends = Vec::new();
    for n in 0..6 {
        let url = format!("{base}/sendMessage?chat_id=42&text=m{n}");
        sends.push(tokio::spawn(async move {
            client().get(url).send().await.unwrap().status().as_u16()
        }));
        // Apart enough that they arrive in this order, close enough to be a burst.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = Instant::now();
    assert_eq!(get_json(&format!("{base}/getMe")).await["ok"], true);
    assert!(
        read.elapsed() < Duration::from_secs(1),
        "a read waits for nobody"
    );
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    let texts = sent_texts(&control, bot).await;
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "m5"]);
}

/// An upstream 429 pauses the chat for its retry_after and the call goes again: the bot gets
/// the eventual 200. A pause past the call's deadline is answered with Telegram's 429 at once,
/// for that call and the next to the same chat (which is not sent); other chats go on. A 429
/// on a chat that had sent nothing for a while is the bot's limit: every chat waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_is_absorbed_or_passed_on_when_the_deadline_is_nearer() {
    let (_sandbox, control, gw) = world().await;
    let bot = 1702;
    let base = format!("{}/bot{}", gw.url, token(bot));
    control
        .fault(json!({"method": "sendMessage", "bot_id": bot, "times": 1,
            "action": {"kind": "status", "status": 429, "retry_after": 1}}))
        .await
        .unwrap();
    let t = Instant::now();
    let v = get_json(&format!("{base}/sendMessage?chat_id=7&text=later")).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        control.calls(bot, Some("sendMessage")).await.unwrap().len(),
        2
    );

    // Chat 8 has sent, so a 429 there is the chat's own limit.
    let v = get_json(&format!("{base}/sendMessage?chat_id=8&text=warm")).await;
    assert_eq!(v["ok"], true, "{v}");
    control
        .fault(json!({"method": "sendMessage", "bot_id": bot, "times": 1,
            "action": {"kind": "status", "status": 429, "retry_after": 5000}}))
        .await
        .unwrap();
    for text in ["first", "second"] {
        let r = client()
            .get(format!("{base}/sendMessage?chat_id=8&text={text}"))
            .send()
            .await
            .unwrap();
        let v = assert_shaped(r, 429).await;
        let after = v["parameters"]["retry_after"].as_u64().unwrap();
        assert!((4_990..=5_000).contains(&after), "{v}");
    }
    let sent = control.calls(bot, Some("sendMessage")).await.unwrap();
    assert_eq!(sent.len(), 4, "the second was not sent: {sent:?}");
    let v = get_json(&format!("{base}/sendMessage?chat_id=9&text=elsewhere")).await;
    assert_eq!(v["ok"], true, "{v}");

    // A 429 on the first send to chat 10: the bot's limit, so chat 11 waits out its 2 s too.
    control
        .fault(json!({"method": "sendMessage", "bot_id": bot, "times": 1,
            "action": {"kind": "status", "status": 429, "retry_after": 2}}))
        .await
        .unwrap();
    let t = Instant::now();
    let first = tokio::spawn(get_json_owned(format!(
        "{base}/sendMessage?chat_id=10&text=idle"
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = get_json(&format!("{base}/sendMessage?chat_id=11&text=waits")).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        t.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(first.await.unwrap()["ok"], true);
}

/// Six messages at once to one private chat, each answered; how many the sandbox refused.
async fn burst(base: &str, chat: i64) -> usize {
    let mut sends = Vec::new();
    for n in 0..6 {
        let url = format!("{base}/sendMessage?chat_id={chat}&text=m{n}");
        sends.push(tokio::spawn(async move {
            client().get(url).send().await.unwrap().status().as_u16()
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = 0;
    for s in sends {
        let status = s.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        refused += usize::from(status == 429);
    }
    refused
}

/// setFloodControl turns flood control on (or off) for one bot of a gateway that has it off,
/// kept in the store; getFloodControl shows the settings and counts; another bot is not
/// touched; a token that is not the bot's changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_turns_flood_control_on_for_itself() {
    let sandbox = Proc::sandbox(&["--flood-limits"]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let (bot, other) = (1711, 1712);
    let base = format!("{}/bot{}", gw.url, token(bot));

    let forged = format!("{}/bot{bot}:AAforgedforgedforgedforgedforgedforged", gw.url);
    let r = client()
        .get(format!("{forged}/setFloodControl?enabled=true"))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 401).await;
    let r = client()
        .get(format!("{base}/setFloodControl?enabled=yes"))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 400).await;
    let v = get_json(&format!("{base}/getFloodControl")).await;
    assert_eq!(v["result"]["enabled"], false, "{v}");
    assert_eq!(v["result"]["set_by"], "gateway");

    let v = get_json(&format!(
        "{base}/setFloodControl?enabled=true&bot_per_second=20"
    ))
    .await;
    assert_eq!(v["result"], true, "{v}");
    assert_eq!(burst(&base, 42).await, 0, "every send within the limits");
    let v = get_json(&format!("{base}/getFloodControl")).await;
    let state = &v["result"];
    assert_eq!(state["enabled"], true, "{v}");
    assert_eq!(state["set_by"], "bot");
    assert_eq!(state["limits"]["bot_per_second"], 20.0);
    assert_eq!(state["sent"], 6);
    assert_eq!(state["queued"], 0);

    // Another bot of the same gateway: no flood control, the sandbox refuses its burst.
    let theirs = format!("{}/bot{}", gw.url, token(other));
    assert!(burst(&theirs, 42).await > 0);

    // Off again, and that too is kept: the bot's burst meets the sandbox's limits.
    let v = get_json(&format!("{base}/setFloodControl?enabled=false")).await;
    assert_eq!(v["result"], true, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(burst(&base, 43).await > 0);
    let store = gw.store().await.unwrap();
    let kept = store.flood_settings().await.unwrap();
    assert!(
        kept.iter()
            .any(|(b, s)| b.0 == bot && s.contains("\"enabled\":false")),
        "{kept:?}"
    );
}

/// A client that goes away while its send waits in the queue cancels it: it is never sent,
/// the record says so (499), and the call behind it takes its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_queued_send() {
    let (_sandbox, control, gw) = world().await;
    let bot = 1703;
    let base = format!("{}/bot{}", gw.url, token(bot));
    // One message at once, then one each 3 s: the second waits long enough to be left.
    let v = get_json(&format!(
        "{base}/setFloodControl?enabled=true&private_chat_burst=1&private_chat_per_minute=20"
    ))
    .await;
    assert_eq!(v["result"], true, "{v}");
    assert_eq!(
        get_json(&format!("{base}/sendMessage?chat_id=42&text=m0")).await["ok"],
        true
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let left = tokio::spawn(
        impatient
            .get(format!("{base}/sendMessage?chat_id=42&text=m1"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let behind = tokio::spawn(get_json_owned(format!(
        "{base}/sendMessage?chat_id=42&text=m2"
    )));
    assert!(left.await.unwrap().is_err(), "the client gave up");
    let v = behind.await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let texts = sent_texts(&control, bot).await;
    assert_eq!(texts, ["m0", "m2"], "the call left behind was not sent");
    let v = get_json(&format!("{base}/getFloodControl")).await;
    assert_eq!(v["result"]["cancelled"], 1, "{v}");
    let rows = gw.audit(bot, 5).await.unwrap();
    let gone = rows
        .iter()
        .find(|r| r.params.get("text").is_some_and(|t| t == "m1"))
        .expect("the cancelled call is recorded");
    assert_eq!(gone.error_code, Some(499), "{gone:?}");
}

async fn get_json_owned(url: String) -> serde_json::Value {
    get_json(&url).await
}

/// A supergroup takes twenty messages a minute, by its id and its @username alike (one queue,
/// once getChat told the id): twenty-two at once are all answered, in order, the last two
/// about 3 and 6 s in, and Telegram never had to refuse one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_takes_twenty_a_minute_by_id_or_username() {
    let (_sandbox, control, gw) = world().await;
    let bot = 1704;
    let group = -1_001_234_567_890i64;
    let r = client()
        .post(format!("{}/control/chats", control.base))
        .json(&json!({"id": group, "type": "supergroup", "title": "Flood", "username": "floodgrp"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let base = format!("{}/bot{}", gw.url, token(bot));
    let v = get_json(&format!("{base}/getChat?chat_id=@floodgrp")).await;
    assert_eq!(v["result"]["id"], group, "{v}");
    let started = Instant::now();
    let mut sends = Vec::new();
    for n in 0..22 {
        let chat = if n % 2 == 0 {
            "@floodgrp".to_owned()
        } else {
            group.to_string()
        };
        let url = format!("{base}/sendMessage?chat_id={chat}&text=g{n}");
        sends.push(tokio::spawn(async move {
            client().get(url).send().await.unwrap().status().as_u16()
        }));
        // Apart enough that they arrive in this order.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(5_500),
        "{:?}",
        started.elapsed()
    );
    let texts = sent_texts(&control, bot).await;
    let expected: Vec<String> = (0..22).map(|n| format!("g{n}")).collect();
    assert_eq!(texts, expected);
    let v = get_json(&format!("{base}/getFloodControl")).await;
    assert_eq!(v["result"]["absorbed_429"], 0, "{v}");
    assert_eq!(v["result"]["sent"], 22, "{v}");
}

/// A file send keeps the place it took when it arrived, through its download, and takes its
/// token from the same buckets as the messages: three messages sent to the chat after it leave
/// after it, within the chat's limits (Telegram refuses none, so none is sent twice). In a
/// split deployment the router keeps the place and the files stage takes its turns from it
/// over the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_send_and_later_messages_leave_in_arrival_order_within_one_set_of_buckets() {
    let app = axum::Router::new().route(
        "/slow.pdf",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            telepipe_tests::testdata("notes.pdf")
        }),
    );
    let files = telepipe_tests::public_server(app).await;
    let sandbox = Proc::sandbox(&["--flood-limits"]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(
        &sandbox.url,
        &["--flood-control", "--allow-url-networks", "127.0.0.2/32"],
    )
    .await
    .unwrap();
    let bot = 1705;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let document = tokio::spawn(get_json_owned(format!(
        "{base}/sendDocument?chat_id=42&document={files}/slow.pdf"
    )));
    let mut messages = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        messages.push(tokio::spawn(get_json_owned(format!(
            "{base}/sendMessage?chat_id=42&text=after{n}"
        ))));
    }
    for m in messages {
        let v = m.await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
    let v = document.await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let sent: Vec<String> = control
        .calls(bot, None)
        .await
        .unwrap()
        .iter()
        .filter(|c| c["method"] != "getMe")
        .map(|c| {
            let text = c["params"]["text"].as_str().unwrap_or("");
            format!("{}{text}", c["method"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        sent,
        [
            "sendDocument",
            "sendMessageafter0",
            "sendMessageafter1",
            "sendMessageafter2"
        ]
    );
}

/// A broadcast: one message to each of 45 chats at once. The bot's thirty a second hold:
/// every message is answered 200, Telegram refuses none, and the last leaves about half a
/// second after the first thirty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_many_chats_holds_the_bots_thirty_a_second() {
    let (_sandbox, control, gw) = world().await;
    let bot = 1706;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let started = Instant::now();
    let sends: Vec<_> = (0..45)
        .map(|n| {
            let url = format!("{base}/sendMessage?chat_id={}&text=b", 5000 + n);
            tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let v = get_json(&format!("{base}/getFloodControl")).await;
    let calls = control.calls(bot, Some("sendMessage")).await.unwrap();
    assert_eq!(calls.len(), 45, "one send each (a 429 would add one): {v}");
    assert_eq!(v["result"]["absorbed_429"], 0, "{v}");
    assert_eq!(v["result"]["sent"], 45, "{v}");
}
