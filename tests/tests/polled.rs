//! Polling bots through the pipeline (issue 15): the gateway polls Telegram for a bot that
//! uses getUpdates, keeps every update, and answers getUpdates from them with the official
//! semantics; named readers follow the same updates with offsets of their own; a bot nobody
//! polls is no longer polled; thousands of waiting polls do not slow other bots down.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use telepipe_tests::{client, eventually, token, Control, Proc};

fn message(text: &str) -> Value {
    json!({"message": {"message_id": 1, "date": 0, "chat": {"id": 10, "type": "private"}, "text": text}})
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let r = http.get(url).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

fn ids(v: &Value) -> Vec<i64> {
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["update_id"].as_i64().unwrap())
        .collect()
}

fn texts(v: &Value) -> Vec<String> {
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["message"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Updates that came while the bot was down (before its first getUpdates, and between two),
/// each answered once, in order; the offset confirms; a negative offset keeps the last ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_was_down_gets_every_update_once_in_order() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 51_001;
    let base = format!("{}/bot{}", gw.url, token(bot));

    // Kept by Telegram before the gateway ever polled for this bot: the first calls have them
    // (the first waits for the gateway's first round; a busy machine may split the two into
    // two rounds, and nothing is confirmed without an offset, so the next call has both).
    let before = control.push_update(bot, message("a")).await.unwrap();
    control.push_update(bot, message("b")).await.unwrap();
    let first = get(&http, format!("{base}/getUpdates")).await;
    assert!(!texts(&first).is_empty(), "{first}");
    assert_eq!(ids(&first)[0], before);
    let both = eventually(Duration::from_secs(10), || async {
        let v = get(&http, format!("{base}/getUpdates?timeout=1")).await;
        (texts(&v).len() == 2).then_some(v)
    })
    .await
    .expect("both kept");
    assert_eq!(texts(&both), ["a", "b"]);

    // The bot is down: the gateway keeps polling and keeping.
    for t in ["c", "d", "e"] {
        control.push_update(bot, message(t)).await.unwrap();
    }
    let kept = eventually(Duration::from_secs(10), || async {
        let info = get(&http, format!("{base}/getWebhookInfo")).await;
        (info["result"]["pending_update_count"] == 5).then_some(info)
    })
    .await;
    assert!(kept.is_some(), "the gateway kept the updates meanwhile");
    assert_eq!(kept.unwrap()["result"]["url"], "");

    // Unconfirmed: the same again, then the offset confirms two of them.
    let again = get(&http, format!("{base}/getUpdates?limit=3")).await;
    assert_eq!(texts(&again), ["a", "b", "c"]);
    let next = ids(&again)[2];
    let rest = get(&http, format!("{base}/getUpdates?offset={next}")).await;
    assert_eq!(texts(&rest), ["c", "d", "e"]);

    // A negative offset: only the last one stays.
    let last = get(&http, format!("{base}/getUpdates?offset=-1")).await;
    assert_eq!(texts(&last), ["e"]);
    let after = ids(&last)[0] + 1;
    let none = get(&http, format!("{base}/getUpdates?offset={after}")).await;
    assert_eq!(none["result"], json!([]));

    // A long poll is answered as soon as the next update is kept.
    let poll = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/getUpdates?offset={after}&timeout=30");
        async move { get(&http, url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    control.push_update(bot, message("f")).await.unwrap();
    let got = poll.await.unwrap();
    assert_eq!(texts(&got), ["f"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // The bot's getUpdates never went upstream as the bot's: only the gateway's own polls,
    // which confirm what the gateway kept.
    let upstream = control.calls(bot, Some("getUpdates")).await.unwrap();
    assert!(
        upstream.iter().all(|c| c["params"]["timeout"]
            .as_str()
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|t| (20..=25).contains(&t))),
        "{upstream:?}"
    );
}

/// Two readers each see every update; the bot's own offset does not take the other's; the
/// gateway method counts what each has pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_each_see_every_update() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 51_002;
    let base = format!("{}/bot{}", gw.url, token(bot));

    // Both start before anything comes.
    assert_eq!(
        get(&http, format!("{base}/getUpdates")).await["result"],
        json!([])
    );
    assert_eq!(
        get(&http, format!("{base}/getUpdates?reader=analytics")).await["result"],
        json!([])
    );
    for t in ["one", "two", "three"] {
        control.push_update(bot, message(t)).await.unwrap();
    }
    let own = eventually(Duration::from_secs(10), || async {
        let v = get(&http, format!("{base}/getUpdates?timeout=5")).await;
        (texts(&v).len() == 3).then_some(v)
    })
    .await
    .expect("the bot's reader gets the three");
    // The bot confirms all three.
    let past = ids(&own)[2] + 1;
    assert_eq!(
        get(&http, format!("{base}/getUpdates?offset={past}")).await["result"],
        json!([])
    );
    // The follower still has them, and moves on by its own offset.
    let follower = get(&http, format!("{base}/getUpdates?reader=analytics")).await;
    assert_eq!(texts(&follower), ["one", "two", "three"]);
    let second = ids(&follower)[1];
    let info = get(&http, format!("{base}/getUpdatesInfo")).await;
    assert_eq!(info["result"]["polling"], true, "{info}");
    let readers = info["result"]["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 2, "{info}");
    assert_eq!(readers[0]["reader"], "");
    assert_eq!(readers[0]["pending_update_count"], 0);
    assert_eq!(readers[1]["reader"], "analytics");
    assert_eq!(readers[1]["pending_update_count"], 3);
    let tail = get(
        &http,
        format!("{base}/getUpdates?reader=analytics&offset={second}"),
    )
    .await;
    assert_eq!(texts(&tail), ["two", "three"]);

    // Overlapping polls of one reader: the older gets Telegram's 409; another reader's poll
    // goes on.
    let waiting = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/getUpdates?offset={past}&timeout=30");
        async move { http.get(url).send().await.unwrap() }
    });
    let other = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/getUpdates?reader=standby&offset={past}&timeout=30");
        async move { http.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let newer = get(&http, format!("{base}/getUpdates?offset={past}")).await;
    assert_eq!(newer["result"], json!([]));
    let v = telepipe_tests::assert_shaped(waiting.await.unwrap(), 409).await;
    assert!(v["description"]
        .as_str()
        .unwrap()
        .contains("terminated by other getUpdates"));
    assert!(!other.is_finished(), "the standby reader still waits");
    control.push_update(bot, message("four")).await.unwrap();
    let standby: Value = other.await.unwrap().json().await.unwrap();
    assert_eq!(texts(&standby), ["four"]);
}

/// allowed_updates reaches Telegram with the gateway's polls (what came before may still come,
/// as at Telegram); a webhook makes getUpdates a 409; parameters are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_updates_and_errors_as_telegram() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 51_003;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let callback = json!({"callback_query": {"id": "1", "from": {"id": 10, "is_bot": false, "first_name": "U"}, "chat_instance": "c", "data": "x"}});

    let url = format!("{base}/getUpdates?allowed_updates=%5B%22callback_query%22%5D");
    assert_eq!(get(&http, url.clone()).await["result"], json!([]));
    // The gateway's next round asks Telegram for callback queries only.
    eventually(Duration::from_secs(10), || async {
        let calls = control.calls(bot, Some("getUpdates")).await.ok()?;
        calls
            .iter()
            .any(|c| c["params"]["allowed_updates"] == r#"["callback_query"]"#)
            .then_some(())
    })
    .await
    .expect("allowed_updates reached upstream");
    control.push_update(bot, message("dropped")).await.unwrap();
    control.push_update(bot, callback).await.unwrap();
    let got = eventually(Duration::from_secs(10), || async {
        let v = get(&http, format!("{base}/getUpdates?timeout=5")).await;
        (!texts(&v).is_empty()).then_some(v)
    })
    .await
    .unwrap();
    let kinds: Vec<_> = got["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            u.as_object()
                .unwrap()
                .keys()
                .find(|k| *k != "update_id")
                .cloned()
        })
        .collect();
    assert_eq!(kinds, [Some("callback_query".to_owned())], "{got}");

    let bad = http
        .get(format!("{base}/getUpdates?allowed_updates=%7B%7D"))
        .send()
        .await
        .unwrap();
    telepipe_tests::assert_shaped(bad, 400).await;
    let bad = http
        .get(format!("{base}/getUpdates?reader=no%20spaces"))
        .send()
        .await
        .unwrap();
    telepipe_tests::assert_shaped(bad, 400).await;

    // The bot's id with another secret reads nothing and changes nothing: Telegram's 401.
    let forged = format!("{}/bot{bot}:AAforgedforgedforgedforgedforgedforged", gw.url);
    for method in ["getUpdates?offset=999999", "getUpdatesInfo"] {
        let r = http.get(format!("{forged}/{method}")).send().await.unwrap();
        telepipe_tests::assert_shaped(r, 401).await;
    }
    let info = get(&http, format!("{base}/getUpdatesInfo")).await;
    assert_eq!(info["result"]["pending_update_count"], 1, "{info}");

    // A setWebhook ends a waiting poll with Telegram's 409; getUpdates is then a 409 too.
    let waiting = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/getUpdates?offset=999999&timeout=30");
        async move { http.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http
        .post(format!("{base}/setWebhook"))
        .form(&[("url", "http://127.0.0.1:9/hook")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = telepipe_tests::assert_shaped(waiting.await.unwrap(), 409).await;
    assert_eq!(
        v["description"],
        "Conflict: terminated by setWebhook request"
    );
    let r = http.get(format!("{base}/getUpdates")).send().await.unwrap();
    telepipe_tests::assert_shaped(r, 409).await;
    let info = get(&http, format!("{base}/getUpdatesInfo")).await;
    assert_eq!(info["result"]["webhook"], true, "{info}");
}

/// A bot nobody polls is no longer polled (`--poll-idle`); its next getUpdates starts again
/// and gets what came meanwhile (Telegram kept it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_stops_when_nobody_asks() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--poll-idle", "1"])
        .await
        .unwrap();
    let http = client();
    let bot = 51_004;
    let base = format!("{}/bot{}", gw.url, token(bot));
    assert_eq!(
        get(&http, format!("{base}/getUpdates")).await["result"],
        json!([])
    );
    // The gateway's long poll at the sandbox ends only when an update comes: one pushed after
    // the idle time ends it, and then the gateway stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    control.push_update(bot, message("late")).await.unwrap();
    let stopped = eventually(Duration::from_secs(15), || async {
        let info = get(&http, format!("{base}/getUpdatesInfo")).await;
        (info["result"]["polling"] == false).then_some(())
    })
    .await;
    assert!(stopped.is_some(), "the gateway stopped polling");
    let polls = control.calls(bot, Some("getUpdates")).await.unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        control.calls(bot, Some("getUpdates")).await.unwrap().len(),
        polls,
        "no more polls upstream"
    );
    control
        .push_update(bot, message("meanwhile"))
        .await
        .unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        let v = get(&http, format!("{base}/getUpdates?timeout=2")).await;
        (texts(&v).len() == 2).then_some(v)
    })
    .await
    .expect("both updates once polling starts again");
    assert_eq!(texts(&back), ["late", "meanwhile"]);
    if !telepipe_tests::split() {
        assert!(gw.log().contains("no longer polling Telegram"));
    }
}

/// Hundreds of bots long-polling hold no processing slot: with 8 slots, another bot's
/// sendMessage keeps its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiting_polls_leave_other_bots_their_latency() {
    const POLLERS: i64 = 300;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &["--concurrency", "8"])
        .await
        .unwrap();
    let http = client();
    let latency = |n: usize| {
        let http = http.clone();
        let url = format!("{}/bot{}/sendMessage", gw.url, token(52_999));
        async move {
            let mut took = Vec::new();
            for i in 0..n {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .json(&json!({"chat_id": 1, "text": format!("m{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                took.push(t.elapsed());
            }
            took.sort();
            took[took.len() * 9 / 10]
        }
    };
    let idle = latency(30).await;
    let polls: Vec<_> = (0..POLLERS)
        .map(|i| {
            let url = format!("{}/bot{}/getUpdates?timeout=50", gw.url, token(52_000 + i));
            let http = http.clone();
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    // Every poll is waiting at the gateway (its first round done).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy = latency(30).await;
    assert!(polls.iter().all(|p| !p.is_finished()), "the polls wait");
    // Generous: this is a correctness bound (before, each call waited for a poll to end).
    assert!(
        busy < idle * 10 + Duration::from_millis(500),
        "p90 {busy:?} with {POLLERS} polls, {idle:?} without"
    );
    for p in polls {
        p.abort();
    }
}

/// As at Telegram, a bot that never named them gets no `chat_member` or reaction updates:
/// they stay out of what the gateway polls and keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_and_reaction_updates_come_only_when_asked_for() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 51_009;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let reaction = json!({"message_reaction": {"chat": {"id": 10, "type": "private"},
        "message_id": 1, "date": 0, "old_reaction": [], "new_reaction": []}});
    control.push_update(bot, reaction).await.unwrap();
    control.push_update(bot, message("kept")).await.unwrap();
    let got = eventually(Duration::from_secs(10), || async {
        let v = get(&http, format!("{base}/getUpdates?timeout=5")).await;
        (!texts(&v).is_empty()).then_some(v)
    })
    .await
    .unwrap();
    assert_eq!(got["result"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(texts(&got), ["kept"]);
}
