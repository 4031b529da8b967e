//! `telepipe serve` on Kafka: the ingest and the router in one process, so each call is handed
//! to the router once the broker acknowledged it, ahead of the router's fetch; and a gateway
//! that outlives its broker's outage. Runs in the suite's first pass, when
//! `TELEPIPE_TEST_KAFKA` names a broker (`.ci/run` starts one); the split pass runs every role
//! apart, where nothing is handed over.

use std::time::Duration;
use telepipe_tests::{client, token, Control, Proc};

fn counter(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Calls published and handed over are answered once each, and committed: the next gateway
/// on the same topics and groups (the same deployment restarted) reads none of them again. A
/// long poll is woken through the hand-over too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_handed_over_answered_once_and_committed() {
    let Ok(broker) = std::env::var("TELEPIPE_TEST_KAFKA") else {
        eprintln!("TELEPIPE_TEST_KAFKA not set: serve on Kafka was not tested");
        return;
    };
    if std::env::var_os("TELEPIPE_TEST_BUS").is_some() {
        eprintln!("the suite's own bus is set: this test runs in the first pass");
        return;
    }
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let ns = format!("hs{:08x}", rand::random::<u32>());
    let (bus, prefix) = (format!("kafka://{broker}"), format!("{ns}."));
    let args = [
        "--bus",
        &bus,
        "--kafka-prefix",
        &prefix,
        "--instance",
        &ns,
        "--partitions",
        "3",
        "--kafka-session-timeout-ms",
        "2000",
    ];
    let bot = 811;
    let send = |gw: String, i: usize| async move {
        let url = format!("{gw}/bot{}/sendMessage", token(bot));
        let r = client()
            .post(url)
            .json(&serde_json::json!({"chat_id": 5, "text": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["result"]["text"], format!("m{i}"), "{v}");
    };

    let gw = Proc::gateway(&sandbox.url, &args).await.unwrap();
    // The router's group joined: a first call answered. Then calls at once: some are read by
    // the router's fetch before their acknowledgement reaches the ingest (its fetches find
    // records waiting), the others handed over.
    send(gw.url.clone(), 0).await;
    let calls: Vec<_> = (1..=30)
        .map(|i| tokio::spawn(send(gw.url.clone(), i)))
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    // Then one after another, each acknowledged while the router's fetch waits: handed over,
    // and the last records of the topic, so only their echoes can commit them.
    let before = counter(
        &telepipe_tests::metrics(&gw.url).await,
        "telepipe_bus_handed_over_total{topic=\"calls\"}",
    );
    for i in 31..=40 {
        send(gw.url.clone(), i).await;
    }
    let metrics = telepipe_tests::metrics(&gw.url).await;
    let handed = counter(&metrics, "telepipe_bus_handed_over_total{topic=\"calls\"}") - before;
    assert!(handed >= 5, "{handed} of 10 calls handed over:\n{metrics}");
    // Where each call's time went is told apart: the broker's acknowledgement of its record
    // (`publish`), and the router's record of its attempt before upstream (`attempt`).
    for stage in ["publish", "attempt"] {
        let n = counter(
            &metrics,
            &format!("telepipe_stage_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert!(n >= 41, "{n} {stage} times, for 41 calls:\n{metrics}");
    }
    // A long poll, woken by its update once it is kept (`updates.kept`, handed over too).
    let poll = tokio::spawn({
        let url = format!("{}/bot{}/getUpdates?timeout=20", gw.url, token(bot));
        async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    });
    control.wait_for_call(bot, "getUpdates").await.unwrap();
    let update = serde_json::json!({"message": {"message_id": 1, "date": 0,
        "chat": {"id": 5, "type": "private"}, "text": "hello"}});
    let id = control.push_update(bot, update).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll is woken by its update")
        .unwrap();
    assert_eq!(woken["result"][0]["update_id"], id, "{woken}");
    let metrics = telepipe_tests::metrics(&gw.url).await;
    let kept = counter(
        &metrics,
        "telepipe_bus_handed_over_total{topic=\"updates.kept\"}",
    );
    assert!(kept >= 1, "the wake was not handed over:\n{metrics}");

    // A stop reads the echoes of what was handed over, and commits them.
    assert!(gw.stop().await.unwrap().success());

    let again = Proc::gateway(&sandbox.url, &args).await.unwrap();
    send(again.url.clone(), 41).await;
    // Long enough for the router's fetch to have gone over anything left uncommitted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = telepipe_tests::metrics(&again.url).await;
    // The router took its own call only (a call taken is timed in the queue stage).
    let taken = counter(&metrics, "telepipe_stage_seconds_count{stage=\"queue\"}");
    assert_eq!(taken, 1, "calls read again after the restart:\n{metrics}");
    let sent = control.calls(bot, Some("sendMessage")).await.unwrap();
    assert_eq!(sent.len(), 42, "each call sent upstream once");
    again.stop().await.unwrap();
}

/// A broker that stops answering for 80 s (SIGSTOP: its connections stay open, its requests
/// time out after librdkafka's 60 s, the reconnect's after 10 s more) does not stop the
/// gateway: its consumers are told "all brokers down", which librdkafka recovers from, and it
/// answers again once the broker does, although the broker fences the producer whose record
/// timed out meanwhile (the call made during the outage, answered with a Bot API-shaped error
/// if not with its result). Before, the gateway stopped (its first consumer to be told failed
/// its task), or, after a shorter outage, answered 503 to every call (its producer fenced).
/// On a broker of its own, started by the project's script: pausing the suite's would stall
/// the other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_outlives_its_brokers_outage() {
    if std::env::var_os("TELEPIPE_TEST_KAFKA").is_none() {
        eprintln!("TELEPIPE_TEST_KAFKA not set: a broker outage was not tested");
        return;
    }
    if std::env::var_os("TELEPIPE_TEST_BUS").is_some() {
        eprintln!("the suite's own bus is set: this test runs in the first pass");
        return;
    }
    let broker = Broker::start();
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let bus = format!("kafka://127.0.0.1:{}", broker.port);
    let args = ["--bus", &bus, "--kafka-session-timeout-ms", "2000"];
    let mut gw = Proc::gateway(&sandbox.url, &args).await.unwrap();
    let bot = 812;
    let send = |gw: String, text: &'static str| async move {
        let url = format!("{gw}/bot{}/sendMessage", token(bot));
        let body = serde_json::json!({"chat_id": 5, "text": text});
        let r = client().post(url).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let (status, v) = send(gw.url.clone(), "before").await;
    assert_eq!(status, 200, "{v}");

    broker.signal("-STOP");
    let during = tokio::spawn(send(gw.url.clone(), "during"));
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            gw.is_running(),
            "the gateway stopped with its broker:\n{}",
            gw.log()
        );
    }
    broker.signal("-CONT");

    let (status, v) = tokio::time::timeout(Duration::from_secs(60), during)
        .await
        .expect("the call made during the outage is answered")
        .unwrap();
    if status != 200 {
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error_code"], status, "{v}");
    }
    // Once the broker answers, so does the gateway (its group joined again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = tokio::time::timeout_at(deadline, send(gw.url.clone(), "after")).await;
        let Ok((status, v)) = answer else {
            panic!(
                "no answer a minute after the broker came back\n{}",
                gw.log()
            );
        };
        if status == 200 {
            assert_eq!(v["result"]["text"], "after", "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer a minute after the broker came back: {status} {v}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(gw.is_running());
    gw.stop().await.unwrap();
}

/// A Kafka-protocol broker of the test's own (`scripts/kafka-broker.sh`), killed when dropped.
struct Broker {
    pid: String,
    port: String,
}

impl Broker {
    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka-broker.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("the broker script runs");
        assert!(out.status.success(), "the broker did not start");
        let text = String::from_utf8_lossy(&out.stdout);
        let (pid, port) = text.trim().split_once(' ').expect("<pid> <port>");
        Broker {
            pid: pid.to_owned(),
            port: port.to_owned(),
        }
    }

    fn signal(&self, sig: &str) {
        telepipe_tests::signal(&self.pid, sig);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A stopped process is killed too.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.pid])
            .status();
    }
}
