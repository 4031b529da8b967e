//! Long polling through the gateway: a getUpdates with timeout 50 stays open while the same
//! bot's other calls go through, and returns as soon as an update arrives; overlapping polls
//! and polls under a webhook get Telegram's 409.

use serde_json::{json, Value};
use telepipe_tests::{client, token, Control, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_hold_up_the_bots_other_calls() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--per-bot-concurrency", "4"])
        .await
        .unwrap();
    let http = client();
    let bot = 31337;
    let base = format!("{}/bot{}", gw.url, token(bot));

    let poll = tokio::spawn({
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}/getUpdates?timeout=50"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    // The poll is open at the sandbox before anything else happens.
    control.wait_for_call(bot, "getUpdates").await.unwrap();

    // More calls than the bot's share, all answered while the poll is still open.
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let http = http.clone();
            let url = format!("{base}/sendMessage");
            tokio::spawn(async move {
                http.post(url)
                    .json(&json!({"chat_id": 10, "text": format!("m{i}")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert!(!poll.is_finished(), "the long poll is still waiting");

    let id = control
        .push_update(bot, json!({"message": {"message_id": 1, "date": 0, "chat": {"id": 10, "type": "private"}, "text": "hello"}}))
        .await
        .unwrap();
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["update_id"], json!(id));

    // The offset confirms it.
    let r: Value = http
        .get(format!("{base}/getUpdates?offset={}&timeout=0", id + 1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"], json!([]));
}

/// Waiting long polls take none of the processing slots: with 4 slots and 12 bots polling,
/// another bot's calls are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_polls_hold_no_slot() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--concurrency", "4"])
        .await
        .unwrap();
    let http = client();
    let polls: Vec<_> = (0..12)
        .map(|i| {
            let url = format!("{}/bot{}/getUpdates?timeout=30", gw.url, token(41_000 + i));
            let http = http.clone();
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for i in 0..12 {
        control
            .wait_for_call(41_000 + i, "getUpdates")
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    for i in 0..8 {
        let r = http
            .get(format!(
                "{}/bot{}/sendMessage?chat_id=1&text=m{i}",
                gw.url,
                token(42_000)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Before the fix each call waited for a poll to end (30 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        polls.iter().all(|p| !p.is_finished()),
        "the polls still wait"
    );
    for p in polls {
        p.abort();
    }
}

/// Shutting down answers waiting long polls at once with no updates (nothing was confirmed),
/// instead of holding the drain until they time out. (One process: with the roles apart, the
/// processor that holds the poll is stopped on its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_polls_at_once() {
    if telepipe_tests::split() {
        return;
    }
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let polls: Vec<_> = (0..5)
        .map(|i| {
            let url = format!("{}/bot{}/getUpdates?timeout=50", gw.url, token(43_000 + i));
            let http = http.clone();
            tokio::spawn(async move {
                let r = http.get(url).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for i in 0..5 {
        control
            .wait_for_call(43_000 + i, "getUpdates")
            .await
            .unwrap();
    }
    let t = std::time::Instant::now();
    let status = gw.stop().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    for p in polls {
        let (status, body) = p.await.unwrap();
        assert_eq!((status, &body["result"]), (200, &json!([])), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_polls_and_webhooks_get_409() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 4242;
    let base = format!("{}/bot{}", gw.url, token(bot));

    let first = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/getUpdates?timeout=30");
        async move { http.get(url).send().await.unwrap() }
    });
    control.wait_for_call(bot, "getUpdates").await.unwrap();
    let second = http
        .get(format!("{base}/getUpdates?timeout=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let v = telepipe_tests::assert_shaped(first.await.unwrap(), 409).await;
    assert!(v["description"]
        .as_str()
        .unwrap()
        .contains("terminated by other getUpdates"));

    let r = http
        .post(format!("{base}/setWebhook"))
        .form(&[("url", "http://127.0.0.1:9/hook")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{base}/getUpdates")).send().await.unwrap();
    telepipe_tests::assert_shaped(r, 409).await;
}
