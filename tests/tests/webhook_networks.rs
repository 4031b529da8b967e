//! Webhook destinations under the operator's control (`--webhook-networks`): cloud metadata and
//! the gateway's own address refused always; with `public` only, a loopback webhook is refused at
//! setWebhook and, for one set before, at delivery (getWebhookInfo shows why). A test binary of
//! its own: it changes `TELEPIPE_WEBHOOK_NETWORKS` for the gateways it restarts.

use serde_json::json;
use std::time::Duration;
use telepipe_tests::{eventually, get_json, post_json, token, Control, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_only_where_the_operator_allows() {
    std::env::remove_var("TELEPIPE_WEBHOOK_NETWORKS");
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let mut gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1501;
    let set = |gw: &Proc, url: String| {
        let endpoint = format!("{}/bot{}/setWebhook", gw.url, token(bot));
        async move { post_json(&endpoint, &json!({ "url": url })).await }
    };

    // Refused whatever the networks: cloud metadata, link-local, the gateway itself (a
    // processor running apart knows its own address, not the ingest's: there the ingest
    // refuses it at delivery).
    let mut refused = vec![
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fe80::1]/".to_owned(),
    ];
    if !telepipe_tests::split() {
        refused.push(format!("{}/metrics", gw.url));
    }
    for url in refused {
        let v = set(&gw, url.clone()).await;
        assert_eq!(v["error_code"], 400, "{url}: {v}");
        let d = v["description"].as_str().unwrap();
        assert!(
            d.starts_with("Bad Request: bad webhook: the address"),
            "{url}: {d}"
        );
    }

    // By default (public, private, loopback) a loopback webhook is a feature.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let v = set(&gw, format!("http://{addr}/hook")).await;
    assert_eq!(v["ok"], true, "{v}");
    control
        .push_update(
            bot,
            json!({"message": {"message_id": 1, "date": 0,
            "chat": {"id": 1, "type": "private"}, "text": "hi"}}),
        )
        .await
        .unwrap();

    // The operator closes the door: public only. What was set before is refused at delivery.
    std::env::set_var("TELEPIPE_WEBHOOK_NETWORKS", "public");
    gw.kill_and_restart().await.unwrap();
    if telepipe_tests::split() {
        gw.kill_helper(0).await;
        gw.restart_helper(0).await.unwrap();
    }
    let info_url = format!("{}/bot{}/getWebhookInfo", gw.url, token(bot));
    let info = eventually(Duration::from_secs(30), || async {
        let v = get_json(&info_url).await;
        v["result"]["last_error_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("bad webhook:"))
            .then_some(v)
    })
    .await
    .expect("the delivery is refused, and getWebhookInfo says why");
    assert_eq!(info["result"]["pending_update_count"], 1, "{info}");
    assert!(info["result"]["last_error_message"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1 is a loopback address"));
    let v = set(&gw, format!("http://{addr}/hook")).await;
    assert_eq!(v["error_code"], 400, "{v}");
    let v = set(&gw, "http://localhost:9/hook".into()).await;
    assert_eq!(v["error_code"], 400, "{v}");
    std::env::remove_var("TELEPIPE_WEBHOOK_NETWORKS");
}
