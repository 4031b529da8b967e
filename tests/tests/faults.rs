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

/// kill -9 the files stage while it fetches a URL upload: the router's process goes on
/// answering sendMessage meanwhile, and after the files stage is back the upload is sent,
/// once: nothing of it had reached upstream, so the restarted stage starts it over (its
/// attempt is recorded only when the call is about to reach upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_files_stage_holds_up_no_plain_call_and_sends_nothing_twice() {
    use axum::routing::get;
    use std::sync::Arc;
    if !runs_here() {
        return;
    }
    // A public server whose file sends its first megabyte, then (the first time it is asked)
    // nothing for an hour.
    let started = Arc::new(tokio::sync::Notify::new());
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hit = started.clone();
    let app = axum::Router::new().route(
        "/slow.pdf",
        get(move || {
            let hit = hit.clone();
            let first_time = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                hit.notify_one();
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'%'; 1 << 20]))
                });
                let stall = futures_util::stream::once(async move {
                    if first_time {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok(bytes::Bytes::from(vec![b'%'; 1 << 20]))
                });
                (
                    [("content-length", (2u64 << 20).to_string())],
                    axum::body::Body::from_stream(futures_util::StreamExt::chain(first, stall)),
                )
            }
        }),
    );
    let files = telepipe_tests::public_server(app).await;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let mut gw = Proc::gateway(
        &sandbox.url,
        &[
            "--allow-url-networks",
            "127.0.0.2/32",
            "--call-timeout",
            "120",
        ],
    )
    .await
    .unwrap();
    let bot = 7301;
    let upload = tokio::spawn(
        client()
            .post(format!("{}/bot{}/sendDocument", gw.url, token(bot)))
            .json(&json!({"chat_id": 5, "document": format!("{files}/slow.pdf")}))
            .send(),
    );
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the files stage starts fetching the URL");
    // Helper 1 is the files stage (helper 0: the router, 2: the updates filter).
    assert!(gw.helper_args[1].contains(&"files".to_owned()));
    gw.kill_helper(1).await;

    // Plain calls, of this bot and another, go on being answered with the files stage gone.
    for (i, b) in [bot, bot + 1].into_iter().cycle().take(20).enumerate() {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client()
                .post(format!("{}/bot{}/sendMessage", gw.url, token(b)))
                .json(&json!({"chat_id": 1, "text": format!("t{i}")}))
                .send(),
        )
        .await
        .expect("sendMessage answered while the files stage is down")
        .unwrap();
        assert_eq!(r.status(), 200);
    }

    gw.restart_helper(1).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(120), upload)
        .await
        .expect("the upload is answered once the files stage is back")
        .unwrap()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let sent = control
        .calls(bot, Some("sendDocument"))
        .await
        .unwrap()
        .len();
    eprintln!("the upload: {status} ({sent} sendDocument upstream)");
    assert_eq!(status, 200, "started over after the restart: {body}");
    assert_eq!(body["result"]["document"]["file_size"], 2 << 20, "{body}");
    assert_eq!(sent, 1, "sent once");
}
