//! A handler that panics (forced through the debug build's `TELEPIPE_TEST_PANIC*` variables):
//! the call gets a shaped answer — a 500 when nothing went upstream, the 409 of an unknown
//! outcome when it may have been executed — and an audit row; its slot and offset are released,
//! so later calls are served and shutdown does not wait for it. Its own test binary: the
//! variables reach every gateway this process starts.

use std::time::{Duration, Instant};
use telepipe_tests::{assert_shaped, client, token, Control, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_records_and_lets_go() {
    std::env::set_var("TELEPIPE_TEST_PANIC", "sendDice");
    std::env::set_var("TELEPIPE_TEST_PANIC_AFTER", "sendMessage");
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let base = format!("{}/bot{}", gw.url, token(8001));

    // Before anything went upstream: a 500, and upstream never saw it.
    let r = http
        .get(format!("{base}/sendDice?chat_id=1"))
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 500).await;
    assert_eq!(
        v["description"],
        "Internal Server Error: the gateway failed on this call"
    );
    let control = Control::new(&sandbox);
    assert!(control
        .calls(8001, Some("sendDice"))
        .await
        .unwrap()
        .is_empty());

    // After upstream executed it: the 409 of an unknown outcome (a 5xx would invite a resend).
    let r = http
        .get(format!("{base}/sendMessage?chat_id=1&text=once"))
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 409).await;
    assert!(v["description"]
        .as_str()
        .unwrap()
        .contains("may or may not have been executed"));
    assert_eq!(
        control
            .calls(8001, Some("sendMessage"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Slots are free: later calls are served, many at once.
    let calls: Vec<_> = (0..40)
        .map(|_| http.get(format!("{base}/getMe")).send())
        .collect();
    for c in futures_util::future::join_all(calls).await {
        assert_eq!(c.unwrap().status(), 200);
    }

    // Both recorded, with the answers the client got.
    let rows = gw.audit(8001, 42).await.unwrap();
    let status_of = |m: &str| {
        rows.iter()
            .find(|r| r.method == m)
            .and_then(|r| r.http_status)
    };
    assert_eq!(status_of("sendDice"), Some(500));
    assert_eq!(status_of("sendMessage"), Some(409));
    let metrics = telepipe_tests::metrics(&gw.url).await;
    if !telepipe_tests::split() {
        assert!(
            metrics.contains("telepipe_call_panics_total 2"),
            "{metrics}"
        );
    }

    // Nothing is left in flight: shutdown does not wait out the drain timeout (10 s).
    let log_before_stop = gw.log();
    assert!(log_before_stop.contains("a call's handler panicked"));
    let t = Instant::now();
    let status = gw.stop().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}
