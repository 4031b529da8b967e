//! `/metrics` (Prometheus text) and `/healthz`.

use telepipe_tests::{client, token, Proc};

/// After a few calls the metrics show calls by method and outcome, per-stage latency,
/// in-flight calls and the bus depth; labels stay bounded (unknown methods are `other`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let tok = token(808);
    for m in [
        "getMe",
        "getMe",
        "sendMessage?chat_id=1",
        "someMadeUpMethod",
    ] {
        http.get(format!("{}/bot{tok}/{m}", gw.url))
            .send()
            .await
            .unwrap();
    }
    http.get(format!("{}/botBAD/getMe", gw.url))
        .send()
        .await
        .unwrap();

    let health = http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let needles = [
        r#"telepipe_calls_total{method="getMe",outcome="ok"} 2"#,
        r#"telepipe_calls_total{method="sendMessage",outcome="error"} 1"#,
        r#"telepipe_calls_total{method="other",outcome="error"} 1"#,
        r#"telepipe_calls_total{method="getMe",outcome="rejected"} 1"#,
        r#"telepipe_stage_seconds_bucket{stage="ingest""#,
        r#"telepipe_stage_seconds_bucket{stage="queue""#,
        r#"telepipe_stage_seconds_bucket{stage="upstream""#,
        "telepipe_calls_in_flight 0",
        r#"telepipe_bus_depth{group="processors",topic="calls"}"#,
        r#"telepipe_upstream_requests_total{outcome="answered"} 4"#,
        r#"telepipe_bus_published_total{topic="calls"} 5"#,
    ];
    // The Kafka bus reports its depth from statistics every 2 s: poll until all are there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        // Every process of the gateway (ingest and processor when they run apart).
        let mut text = String::new();
        for url in gw.urls() {
            let r = http.get(format!("{url}/metrics")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"));
            text.push_str(&r.text().await.unwrap());
        }
        if needles.iter().all(|n| text.contains(n)) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for needle in needles {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("someMadeUpMethod"));
}

/// The gauge's value for each lane, in lane order.
fn lane_connections(metrics: &str) -> Vec<u64> {
    let mut lanes: Vec<(u32, u64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("telepipe_lane_connections{lane=\""))
        .filter_map(|l| {
            let (lane, value) = l.split_once("\"} ")?;
            Some((lane.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect();
    lanes.sort();
    lanes.into_iter().map(|(_, open)| open).collect()
}

/// Bots' connections are dealt to the lanes evenly (`--lanes 3`): three kept-alive clients and
/// the scrape's own connection make 2, 1, 1, and every one is answered. `--lanes 0` serves on
/// the shared runtime, with no lanes to count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_dealt_evenly_to_the_lanes() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    for (lanes, expected) in [("3", vec![2, 1, 1]), ("0", vec![])] {
        let gw = Proc::gateway(&sandbox.url, &["--lanes", lanes])
            .await
            .unwrap();
        let url = format!("{}/bot{}/getMe", gw.url, token(809));
        // Each client keeps its connection open between calls.
        let clients: Vec<_> = (0..3).map(|_| client()).collect();
        for _ in 0..2 {
            for c in &clients {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200, "--lanes {lanes}");
                r.bytes().await.unwrap();
            }
        }
        let text = telepipe_tests::metrics(&gw.url).await;
        let mut open = lane_connections(&text);
        open.sort_by(|a, b| b.cmp(a));
        assert_eq!(open, expected, "--lanes {lanes}:\n{text}");
        drop(clients);
        gw.stop().await.unwrap();
    }
}
