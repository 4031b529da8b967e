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

/// A sandbox whose sendMessage takes `delay_ms`, and a gateway giving each bot `share` calls
/// at once.
struct Scene {
    _sandbox: Proc,
    control: Control,
    gw: Proc,
}

async fn scene(delay_ms: u64, share: &str) -> Scene {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    control
        .fault(json!({"method": "sendMessage", "times": 1000,
            "action": {"kind": "delay", "ms": delay_ms}}))
        .await
        .unwrap();
    let gw = Proc::gateway(&sandbox.url, &["--per-bot-concurrency", share])
        .await
        .unwrap();
    Scene {
        _sandbox: sandbox,
        control,
        gw,
    }
}

type Sent = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// CALLS sendMessage calls at once, texts `<prefix><i>`.
fn fire(gw: &Proc, bot: i64, prefix: &str) -> Vec<Sent> {
    let http = client();
    (0..CALLS)
        .map(|i| {
            let req = http
                .post(format!("{}/bot{}/sendMessage", gw.url, token(bot)))
                .json(&json!({"chat_id": 1, "text": format!("{prefix}{i}")}));
            tokio::spawn(req.send())
        })
        .collect()
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

/// Waits until `n` texts have reached the sandbox.
async fn reached(control: &Control, bot: i64, n: usize) {
    eventually(Duration::from_secs(30), || async {
        (texts(control, bot).await.len() >= n).then_some(())
    })
    .await
    .expect("calls reach upstream");
}

/// kill -9 the processor with calls in flight, start it again: every call is answered (sent,
/// or refused with the shaped 409 when its outcome is unknown) and none reaches upstream twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_loses_no_call_and_repeats_none() {
    if !runs_here() {
        return;
    }
    // Bind the sandbox: a field left to `..` would be dropped, and the sandbox killed, at once.
    let Scene {
        _sandbox,
        control,
        mut gw,
    } = scene(400, "4").await;
    let bot = 7101;
    let calls = fire(&gw, bot, "m");
    // Some calls are at the sandbox (being delayed) when the processor dies.
    reached(&control, bot, 2).await;
    gw.kill_helper(0).await;
    gw.restart_helper(0).await.unwrap();

    let mut answered = Vec::new();
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap().expect("the ingest stays up");
        let status = r.status().as_u16();
        answered.push((i, status, r.json::<Value>().await.unwrap()));
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
    // Bind the sandbox: a field left to `..` would be dropped, and the sandbox killed, at once.
    let Scene {
        _sandbox,
        control,
        mut gw,
    } = scene(300, "2").await;
    let bot = 7102;
    let calls = fire(&gw, bot, "k");
    // Every call is accepted (published) once the first one reaches upstream: the share of 2
    // holds the rest in the log.
    reached(&control, bot, 1).await;
    gw.kill().await;
    let mut errors = 0;
    for c in calls {
        if c.await.unwrap().is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0, "the clients of a dead ingest get errors");

    // The processor goes on: every call executed once, each in the audit log.
    reached(&control, bot, CALLS).await;
    let seen = texts(&control, bot).await;
    assert_eq!(seen.len(), CALLS);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let rows = gw
        .audit(bot, CALLS)
        .await
        .expect("every accepted call is audited");
    assert_eq!(rows.len(), CALLS);
    assert!(rows.iter().all(|r| r.http_status == Some(200)));
}
