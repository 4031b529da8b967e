//! Crashes in Kafka mode, with ingest and processors as separate processes
//! (`TELEPIPE_TEST_SPLIT=1`, `TELEPIPE_TEST_BUS=kafka://...`; `.ci/run`'s second pass).
//! Elsewhere these tests say they did not run.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use telepipe_tests::{client, eventually, split, token, Control, Proc};

const CALLS: usize = 16;

fn runs_here() -> bool {
    if !split() {
        eprintln!("needs ingest and processors apart on Kafka (TELEPIPE_TEST_SPLIT=1): not run");
    }
    split()
}

/// How often each text reached the sandbox.
async fn texts(control: &Control, bot: i64) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for c in control.calls(bot, Some("sendMessage")).await.unwrap() {
        *out.entry(c["params"]["text"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    out
}

/// kill -9 the processor with calls in flight, start it again: every call is answered (sent,
/// or refused with the shaped 409 when its outcome is unknown) and none reaches upstream twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_loses_no_call_and_repeats_none() {
    if !runs_here() {
        return;
    }
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    control
        .fault(
            json!({"method": "sendMessage", "times": 1000, "action": {"kind": "delay", "ms": 400}}),
        )
        .await
        .unwrap();
    let mut gw = Proc::gateway(&sandbox.url, &["--per-bot-concurrency", "4"])
        .await
        .unwrap();
    let http = client();
    let bot = 7101;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let http = http.clone();
            let url = format!("{base}/sendMessage");
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .json(&json!({"chat_id": 1, "text": format!("m{i}")}))
                    .send()
                    .await
                    .expect("the ingest stays up");
                let status = r.status().as_u16();
                (i, status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    // Some calls are at the sandbox (being delayed) when the processor dies.
    eventually(Duration::from_secs(30), || async {
        (texts(&control, bot).await.len() >= 2).then_some(())
    })
    .await
    .expect("calls reach upstream");
    gw.kill_helper(0).await;
    gw.restart_helper(0).await.unwrap();

    let mut answered = Vec::new();
    for c in calls {
        answered.push(c.await.unwrap());
    }
    let seen = texts(&control, bot).await;
    let mut sent = 0;
    for (i, status, body) in &answered {
        let text = format!("m{i}");
        match status {
            200 => {
                sent += 1;
                assert_eq!(seen.get(&text), Some(&1), "{text} answered 200, sent once");
            }
            409 => assert!(
                body["description"].as_str().unwrap().contains("in flight"),
                "{body}"
            ),
            other => panic!("{text}: unexpected status {other}: {body}"),
        }
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a call reached upstream twice: {seen:?}"
    );
    eprintln!(
        "{sent} sent, {} refused as in flight, {} reached upstream",
        answered.len() - sent,
        seen.len()
    );
    assert!(sent > 0, "calls after the restart go through");
}

/// kill -9 the ingest with calls in flight: its clients get errors, and every call it had
/// accepted is still executed (once) and in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_loses_nothing_it_accepted() {
    if !runs_here() {
        return;
    }
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    control
        .fault(
            json!({"method": "sendMessage", "times": 1000, "action": {"kind": "delay", "ms": 300}}),
        )
        .await
        .unwrap();
    let mut gw = Proc::gateway(&sandbox.url, &["--per-bot-concurrency", "2"])
        .await
        .unwrap();
    let http = client();
    let bot = 7102;
    let base = format!("{}/bot{}", gw.url, token(bot));
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let http = http.clone();
            let url = format!("{base}/sendMessage");
            tokio::spawn(async move {
                http.post(url)
                    .json(&json!({"chat_id": 1, "text": format!("k{i}")}))
                    .send()
                    .await
            })
        })
        .collect();
    // Every call is accepted (published) once the first one reaches upstream: the share of 2
    // holds the rest in the log.
    eventually(Duration::from_secs(30), || async {
        (!texts(&control, bot).await.is_empty()).then_some(())
    })
    .await
    .expect("calls reach upstream");
    gw.kill().await;
    let mut errors = 0;
    for c in calls {
        if c.await.unwrap().is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0, "the clients of a dead ingest get errors");

    // The processor goes on: every call executed once, each in the audit log.
    let seen = eventually(Duration::from_secs(60), || async {
        let seen = texts(&control, bot).await;
        (seen.len() == CALLS).then_some(seen)
    })
    .await
    .expect("every accepted call reaches upstream");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let store = store::sqlite::SqliteStore::open(&gw.data_dir().join("store.db")).unwrap();
    let rows = eventually(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let q = store::CallQuery {
                bot_id: schemas::BotId(bot),
                from_ms: 0,
                to_ms: i64::MAX,
                limit: 100,
            };
            let rows = store::Store::calls(&store, &q).await.ok()?;
            (rows.len() == CALLS).then_some(rows)
        }
    })
    .await
    .expect("every accepted call is audited");
    assert!(rows.iter().all(|r| r.http_status == Some(200)));
}
