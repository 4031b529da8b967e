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
