//! The record read and re-run (issue 11): a thousand mixed calls through the gateway to one
//! sandbox, listed and counted by `telepipe audit`, replayed by `telepipe replay` into a fresh
//! sandbox with no differences; a forced difference reported; a dry run sends nothing; and no
//! token used anywhere in plaintext in the store, blobs, logs, metrics or reports.

use serde_json::{json, Value};
use std::collections::HashMap;
use telepipe_tests::{client, telepipe, Control, Proc, TempDir};

const BOTS: [i64; 3] = [7001, 7002, 7003];
const ROUNDS: usize = 48;
/// Calls a round makes (see `round`).
const PER_ROUND: usize = 7;

/// One round of a bot's traffic: every encoding, an upload, a failing and an unknown method.
async fn round(gw: &str, bot: i64, i: usize) {
    let http = client();
    let base = format!("{gw}/bot{}", sandbox::token_for(bot));
    let ok = |r: reqwest::Response| async move { (r.status().as_u16(), r.text().await.unwrap()) };
    let (s, _) = ok(http.get(format!("{base}/getMe")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    let (s, _) = ok(http
        .get(format!("{base}/sendMessage?chat_id=1&text=query+{i}"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 200);
    let (s, _) = ok(http
        .post(format!("{base}/sendMessage"))
        .form(&[("chat_id", "1"), ("text", &format!("form {i}"))])
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 200);
    let (s, _) = ok(http
        .post(format!("{base}/sendMessage"))
        // The token in a parameter (and so in the answer): the record keeps neither in clear.
        .json(
            &json!({"chat_id": 1, "text": format!("json {i} {}", sandbox::token_for(bot)),
            "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]}}),
        )
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 200);
    let form = reqwest::multipart::Form::new().text("chat_id", "1").part(
        "document",
        reqwest::multipart::Part::bytes(format!("file {bot} {i}\n").into_bytes())
            .file_name(format!("f{i}.txt"))
            .mime_str("text/plain")
            .unwrap(),
    );
    let (s, body) = ok(http
        .post(format!("{base}/sendDocument"))
        .multipart(form)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = ok(http
        .get(format!("{base}/sendMessage?text=no+chat"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 400);
    let (s, _) = ok(http
        .get(format!("{base}/fooBar{}", i % 2))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 404);
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn audit_json(gw: &Proc, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit".to_owned(), "--format".into(), "json".into()];
    args.extend(gw.record_flags());
    args.extend(filters.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    lines(&telepipe(&refs).await.unwrap())
}

async fn replay(gw: &Proc, flags: &[&str]) -> String {
    let mut args = vec!["replay".to_owned()];
    args.extend(gw.record_flags());
    args.extend(flags.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    telepipe(&refs).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_is_audited_and_replayed_without_differences() {
    let first = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&first.url, &[]).await.unwrap();
    let started = schemas::now_ms();
    let traffic: Vec<_> = BOTS
        .iter()
        .map(|&bot| {
            let url = gw.url.clone();
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    round(&url, bot, i).await;
                }
            })
        })
        .collect();
    for t in traffic {
        t.await.unwrap();
    }
    let ended = schemas::now_ms() + 1;
    let per_bot = ROUNDS * PER_ROUND;
    for bot in BOTS {
        gw.audit(bot, per_bot).await.unwrap();
    }
    let total = BOTS.len() * per_bot;

    // audit: the whole record, then each filter against the known traffic.
    let all = audit_json(&gw, &[]).await;
    assert_eq!(all.len(), total);
    assert!(all
        .windows(2)
        .all(|w| w[0]["received_ms"].as_i64() <= w[1]["received_ms"].as_i64()));
    let mut encodings: HashMap<String, usize> = HashMap::new();
    for r in &all {
        *encodings
            .entry(r["encoding"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert_eq!(r["replayable"], true);
    }
    let n = BOTS.len() * ROUNDS;
    assert_eq!(encodings["query"], 4 * n);
    assert_eq!(
        (encodings["form"], encodings["json"], encodings["multipart"]),
        (n, n, n)
    );
    let by_name = audit_json(
        &gw,
        &["--bot", "@sandbox7001_bot", "--method", "SENDMESSAGE"],
    )
    .await;
    assert_eq!(by_name.len(), 4 * ROUNDS);
    assert!(by_name
        .iter()
        .all(|r| r["bot_id"] == 7001 && r["method"] == "sendMessage"));
    let by_id = audit_json(
        &gw,
        &["--bot", "7002", "--status", "400", "--error-code", "400"],
    )
    .await;
    assert_eq!(by_id.len(), ROUNDS);
    assert!(by_id
        .iter()
        .all(|r| r["description"] == "Bad Request: chat_id is empty"));
    assert_eq!(audit_json(&gw, &["--status", "404"]).await.len(), n);
    assert!(audit_json(&gw, &["--bot", "@nobody_here_bot"])
        .await
        .is_empty());
    let since = audit::format_time(ended);
    let until = audit::format_time(started - 1);
    assert!(audit_json(&gw, &["--since", &since]).await.is_empty());
    assert!(audit_json(&gw, &["--until", &until]).await.is_empty());
    assert_eq!(audit_json(&gw, &["--since", "1h"]).await.len(), total);
    let stats = audit_json(&gw, &["--stats"]).await;
    let line = |key: &str| stats.iter().find(|l| l["key"] == key).cloned().unwrap();
    assert_eq!(
        (
            line("sendmessage")["calls"].as_u64(),
            line("sendmessage")["errors"].as_u64()
        ),
        (Some(4 * n as u64), Some(n as u64))
    );
    assert_eq!(line("senddocument")["calls"], n);
    assert_eq!(line("(all)")["calls"], total);
    assert!(line("(all)")["p99_ms"].as_u64().is_some());
    let by_bot = audit_json(&gw, &["--stats", "--by", "bot"]).await;
    assert!(by_bot
        .iter()
        .any(|l| l["key"] == "7003" && l["calls"] == per_bot));
    let table = {
        let mut args = vec!["audit".to_owned()];
        args.extend(gw.record_flags());
        args.extend([
            "--bot".into(),
            "7001".into(),
            "--method".into(),
            "sendDocument".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        telepipe(&refs).await.unwrap()
    };
    assert_eq!(
        table.lines().count(),
        ROUNDS + 1,
        "a header and a line a call"
    );
    assert!(table.lines().nth(1).unwrap().contains("multipart"));

    // replay into a fresh sandbox: no differences.
    let second = Proc::sandbox(&[]).await.unwrap();
    let out_dir = TempDir::new("tp-replay");
    let report = out_dir.0.join("report.jsonl");
    let dry = replay(
        &gw,
        &["--target", &second.url, "--dry-run", "--bot", "7002"],
    )
    .await;
    assert!(dry.contains(&format!("{per_bot} would be sent")), "{dry}");
    let control = Control::new(&second);
    assert!(
        control.calls(7002, None).await.unwrap().is_empty(),
        "a dry run sends nothing"
    );
    let summary = replay(
        &gw,
        &[
            "--target",
            &second.url,
            "--rate",
            "5000",
            "--report",
            report.to_str().unwrap(),
        ],
    )
    .await;
    let entries = lines(&std::fs::read_to_string(&report).unwrap());
    assert_eq!(entries.len(), total);
    let different: Vec<_> = entries.iter().filter(|e| e["verdict"] != "same").collect();
    assert!(different.is_empty(), "{summary}\n{different:#?}");
    assert!(
        summary.starts_with(&format!("{total} calls selected: {total} same")),
        "{summary}"
    );
    assert_eq!(
        control
            .calls(7003, Some("sendDocument"))
            .await
            .unwrap()
            .len(),
        ROUNDS
    );

    // A forced difference: bot 7001's getMe replayed as another bot.
    let other = sandbox::token_for(7999);
    let forced = replay(
        &gw,
        &[
            "--target",
            &second.url,
            "--bot",
            "7001",
            "--method",
            "getMe",
            "--token-map",
            &format!("7001={other}"),
            "--rate",
            "5000",
        ],
    )
    .await;
    assert!(
        forced.contains(&format!(
            "{ROUNDS} calls selected: 0 same, {ROUNDS} different"
        )),
        "{forced}"
    );
    assert!(forced.contains("result.id: 7001 → 7999"), "{forced}");

    // On Kafka, the same calls read from the bus instead of the store, into a third sandbox.
    if let (Some(bus), Some(prefix)) = (gw.flag("--bus"), gw.flag("--kafka-prefix")) {
        let third = Proc::sandbox(&[]).await.unwrap();
        let summary = replay(
            &gw,
            &[
                "--from-bus",
                "--bus",
                &bus,
                "--kafka-prefix",
                &prefix,
                "--since",
                "1h",
                "--target",
                &third.url,
                "--rate",
                "5000",
            ],
        )
        .await;
        assert!(
            summary.starts_with(&format!("{total} calls selected: {total} same")),
            "{summary}"
        );
        let c = Control::new(&third);
        assert_eq!(
            c.calls(7002, Some("sendDocument")).await.unwrap().len(),
            ROUNDS
        );
    }

    // Retention on demand: a dry run counts, then everything older than now goes.
    let gc = |extra: &[&str]| {
        let mut args = vec!["gc".to_owned()];
        args.extend(gw.record_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let dry_gc = gc(&["--retain-calls", "0s", "--dry-run"]);
    let refs: Vec<&str> = dry_gc.iter().map(String::as_str).collect();
    let counted = telepipe(&refs).await.unwrap();
    assert!(
        counted.contains(&format!("would forget {total} audit rows")),
        "{counted}"
    );
    assert_eq!(
        audit_json(&gw, &[]).await.len(),
        total,
        "a dry run forgets nothing"
    );

    // No token in plaintext: the store, its blobs, the logs, the metrics, the reports.
    let metrics = telepipe_tests::metrics(&gw.url).await;
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("metrics".into(), metrics.into_bytes()),
        ("log".into(), gw.log().into_bytes()),
        ("store".into(), gw.store_text().await.unwrap().into_bytes()),
        ("report".into(), std::fs::read(&report).unwrap()),
        (
            "replay output".into(),
            format!("{dry}{summary}{forced}").into_bytes(),
        ),
    ];
    let mut stack = vec![gw.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                haystacks.push((path.display().to_string(), bytes));
            }
        }
    }
    let tokens: Vec<String> = BOTS
        .iter()
        .chain([&7999])
        .map(|&b| sandbox::token_for(b))
        .collect();
    let real_gc = gc(&["--retain-calls", "0s", "--retain-results", "0s"]);
    let refs: Vec<&str> = real_gc.iter().map(String::as_str).collect();
    let forgot = telepipe(&refs).await.unwrap();
    // ScyllaDB forgets results by the TTL they were written with, not by a later --retain-results.
    let results = if gw
        .flag("--store")
        .is_some_and(|s| s.starts_with("scylla://"))
    {
        0
    } else {
        total
    };
    assert!(
        forgot.contains(&format!("forgot {total} audit rows, {results} results")),
        "{forgot}"
    );
    assert!(audit_json(&gw, &[]).await.is_empty());
    for (name, bytes) in &haystacks {
        for t in &tokens {
            let secret = t.split_once(':').unwrap().1.as_bytes();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a token in plaintext in {name}"
            );
        }
    }
}

/// A gateway stopped while calls stream in (SIGTERM) has recorded every call it answered by
/// the time it exits: the last calls' audit rows, still queued in the store when its tasks
/// end, are written before the process goes (they died with it before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_under_load_has_recorded_every_answered_call() {
    const BOT: i64 = 7004;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let mut gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let url = format!("{}/bot{}/getMe", gw.url, sandbox::token_for(BOT));
    // The pipeline is ready (on Kafka, its groups joined) before the clock starts.
    let ready = telepipe_tests::eventually(std::time::Duration::from_secs(60), || async {
        let r = client().get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    });
    ready.await.expect("the gateway answers getMe");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (url, answered) = (url.clone(), answered.clone());
            tokio::spawn(async move {
                let http = client();
                // Until the gateway is gone; only whole 200s count as answered.
                while let Ok(r) = http.get(&url).send().await {
                    if r.status() == 200 && r.bytes().await.is_ok() {
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Stopped mid-stream, with calls in flight.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = gw.terminate().await.unwrap();
    assert!(status.success(), "{status}");
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        answered > 20,
        "only {answered} calls answered before the stop"
    );
    let store = gw.store().await.unwrap();
    let query = store::CallQuery {
        // The rows only, not each one's kept answer.
        light: true,
        ..store::CallQuery::bot(schemas::BotId(BOT), 0, i64::MAX, 1_000_000)
    };
    let rows = store.calls(&query).await.unwrap().len();
    assert!(
        rows >= answered,
        "{rows} audit rows for {answered} answered calls"
    );
}

/// Waits until the gateway has one call in hand.
async fn call_in_hand(gw: &Proc) {
    let in_hand = telepipe_tests::eventually(std::time::Duration::from_secs(30), || async {
        let text = telepipe_tests::metrics(&gw.url).await;
        text.lines()
            .any(|l| l == "telepipe_calls_in_flight 1")
            .then_some(())
    });
    in_hand.await.expect("the call is in flight");
}

/// A stop (SIGTERM) lets the request in hand finish and answers it, while the gateway takes
/// no new connection: a client connecting meanwhile is refused at once (it knows nothing was
/// sent), not left in the listen backlog until the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_the_request_in_hand_and_refuses_new_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let mut gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let addr = gw.url.trim_start_matches("http://").to_owned();
    // A call whose body is half sent when the gateway is told to stop.
    let body = format!("padding={}", "a".repeat(100));
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /bot{}/getMe HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        sandbox::token_for(7005),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..50]).await.unwrap();
    // The call is in hand (its head read, its body awaited) before the stop.
    call_in_hand(&gw).await;
    let pid = gw.pid().to_string();
    telepipe_tests::signal(&pid, "-TERM");
    let refused = telepipe_tests::eventually(std::time::Duration::from_secs(10), || async {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    refused
        .await
        .expect("a new connection is refused while the stop drains");
    // Still running (not exited, nor a zombie waiting to be reaped): draining the call.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let state = status.lines().find(|l| l.starts_with("State:")).unwrap();
    assert!(
        !state.contains('Z'),
        "still draining the request in hand: {state}"
    );
    tcp.write_all(&body.as_bytes()[50..]).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tcp.read_to_string(&mut answer),
    )
    .await
    .expect("answered, then closed")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    let status = gw.terminate().await.unwrap();
    assert!(status.success(), "{status}");
}

/// A client that stops sending mid-body does not keep a stopping gateway: its connection is
/// closed once the drain is spent (twice `--drain-timeout`: the requests', then the calls').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_forever_for_a_client_that_stops_sending() {
    use tokio::io::AsyncWriteExt;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let mut gw = Proc::gateway(&sandbox.url, &["--drain-timeout", "1"])
        .await
        .unwrap();
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /bot{}/getMe HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\na=1",
        sandbox::token_for(7006),
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    call_in_hand(&gw).await;
    let started = std::time::Instant::now();
    // `terminate` gives up after 30 s.
    let status = gw.terminate().await.expect("the gateway exits");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    drop(tcp);
}
