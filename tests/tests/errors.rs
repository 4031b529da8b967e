//! Bad input gets a Bot API-shaped error with HTTP status = error_code, is still recorded for
//! audit, and never reaches upstream; upstream's own errors come back as upstream sent them.

use serde_json::json;
use telepipe_tests::{assert_shaped, client, refusing_port, token, Control, Proc};

/// Tokens of the wrong shape: 401 without contacting upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_locally() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    for path in [
        "/botBAD/getMe",
        "/bot123/getMe",
        "/bot123:short/getMe",
        "/bot:AAsandbox1e240xxxxxxxxxxxxxxxxxxxxxx/getMe",
        "/bot-5:AAsandbox1e240xxxxxxxxxxxxxxxxxxxxxx/getMe",
        "/bot12%2F3:AAsandbox1e240xxxxxxxxxxxxxxxxxxxxxx/getMe",
        "/bot/getMe",
        "/bot",
    ] {
        let r = http.get(format!("{}{path}", gw.url)).send().await.unwrap();
        let v = assert_shaped(r, 401).await;
        assert_eq!(v["description"], "Unauthorized", "{path}");
    }
    let r = http
        .get(format!("{}/file/botBAD/documents/file_1.txt", gw.url))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 401).await;
    let all: serde_json::Value = http
        .get(format!("{}/control/calls", sandbox.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all, json!([]), "nothing may reach upstream");
}

/// Malformed bodies and paths: shaped 400/404/405/413, nothing forwarded, still audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_shaped_errors_and_are_audited() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &["--max-body", "4096"])
        .await
        .unwrap();
    let control = Control::new(&sandbox);
    let http = client();
    let bot = 5150;
    let url = |m: &str| format!("{}/bot{}/{m}", gw.url, token(bot));

    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            http.post(url("sendMessage"))
                .header("content-type", "application/json")
                .body("{\"chat_id\":"),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "application/json")
                .body("[1,2]"),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "application/json")
                .body("\"text\""),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![0x66, 0x3d, 0xff, 0xfe]),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "multipart/form-data")
                .body("--x\r\n"),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "multipart/form-data; boundary=x")
                .body("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated"),
            400,
        ),
        (
            http.post(url("sendMessage"))
                .header("content-type", "application/json")
                .body(format!("{{\"text\":\"{}\"}}", "a".repeat(5000))),
            413,
        ),
        (http.get(format!("{}/bot{}/", gw.url, token(bot))), 404),
        (http.get(format!("{}/bot{}/a/b", gw.url, token(bot))), 404),
        (http.put(url("getMe")), 405),
        (http.get(format!("{}/nothing/here", gw.url)), 404),
    ];
    let n = cases.len();
    for (i, (req, code)) in cases.into_iter().enumerate() {
        let r = req.send().await.unwrap();
        let v = assert_shaped(r, code).await;
        assert!(!v["description"].as_str().unwrap().is_empty(), "case {i}");
    }
    assert!(
        control.calls(bot, None).await.unwrap().is_empty(),
        "nothing forwarded"
    );

    // Every call with a well-formed token is in the audit log, marked rejected. (The last
    // case has no bot path, so it is not a call.)
    let rows = gw
        .audit(bot, n - 1)
        .await
        .expect("every refused call is audited");
    assert_eq!(rows.len(), n - 1);
    assert!(rows.iter().all(|r| r.outcome == store::Outcome::Rejected));
    assert!(rows.iter().any(|r| r.error_code == Some(413)));
}

/// Upstream down: 502 in the Bot API shape; a slow upstream past the call timeout: 504 for a
/// read, 409 (outcome unknown) for a call that may change something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_shaped() {
    // A port nobody listens on, held for the test (a freed port was once taken by one of the
    // split run's own processes, which answered 404).
    let (_held, addr) = refusing_port();
    let dead = format!("http://{addr}");
    let gw = Proc::gateway(&dead, &[]).await.unwrap();
    let r = client()
        .get(format!("{}/bot{}/getMe", gw.url, token(1)))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 502).await;
    // Error paths are where a URL (and so a token) could slip into a log line.
    let secret = token(1).split_once(':').unwrap().1.to_owned();
    assert!(gw.log().contains("upstream call failed"));
    assert!(!gw.log().contains(&secret), "the token is in the log");

    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--call-timeout", "2"])
        .await
        .unwrap();
    control
        .fault(json!({"method": "getMe", "action": {"kind": "delay", "ms": 4000}}))
        .await
        .unwrap();
    let r = client()
        .get(format!("{}/bot{}/getMe", gw.url, token(1)))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 504).await;
    // A call that may change something is not given a 5xx once it went upstream (clients
    // resend on those): a 409 says its outcome is unknown.
    control
        .fault(json!({"method": "sendMessage", "action": {"kind": "delay", "ms": 4000}}))
        .await
        .unwrap();
    let r = client()
        .get(format!(
            "{}/bot{}/sendMessage?chat_id=1&text=slow",
            gw.url,
            token(1)
        ))
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 409).await;
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("did not answer this call before its deadline"),
        "{v}"
    );
}

/// Upstream's 429 (with retry_after) and 5xx pass through; a non-JSON error page is wrapped
/// in the Bot API shape with the same status; a connection dropped after the call was sent is
/// a shaped error: a 409 for a call that may have been executed (a 5xx would invite a resend,
/// ENHANCED.md), a 502 for a read, which may run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let url = format!("{}/bot{}/sendMessage?chat_id=1&text=hi", gw.url, token(77));

    control
        .fault(json!({"method": "sendMessage", "action": {"kind": "status", "status": 429, "retry_after": 13}}))
        .await
        .unwrap();
    let v = assert_shaped(http.get(&url).send().await.unwrap(), 429).await;
    assert_eq!(v["parameters"]["retry_after"], json!(13));
    assert_eq!(v["description"], "Too Many Requests: retry after 13");

    control
        .fault(json!({"method": "sendMessage", "action": {"kind": "status", "status": 502, "body": "<html><body>Bad Gateway</body></html>"}}))
        .await
        .unwrap();
    let v = assert_shaped(http.get(&url).send().await.unwrap(), 502).await;
    assert_eq!(v["description"], "Bad Gateway");

    control
        .fault(json!({"method": "sendMessage", "action": {"kind": "status", "status": 500}}))
        .await
        .unwrap();
    assert_shaped(http.get(&url).send().await.unwrap(), 500).await;

    control
        .fault(json!({"method": "sendMessage", "action": {"kind": "drop"}}))
        .await
        .unwrap();
    let v = assert_shaped(http.get(&url).send().await.unwrap(), 409).await;
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("may or may not have been executed"),
        "{v}"
    );
    control
        .fault(json!({"method": "getMe", "action": {"kind": "drop"}}))
        .await
        .unwrap();
    let me = format!("{}/bot{}/getMe", gw.url, token(77));
    assert_shaped(http.get(&me).send().await.unwrap(), 502).await;

    // And the next call goes through normally.
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// No plaintext token in the log, the store or the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_appear_in_clear() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let tok = token(9090);
    let secret = tok.split_once(':').unwrap().1.to_owned();
    for m in [
        "getMe",
        "sendMessage?chat_id=1&text=x",
        "nope",
        "sendMessage",
    ] {
        http.get(format!("{}/bot{tok}/{m}", gw.url))
            .send()
            .await
            .unwrap();
    }
    // A token that is almost right is a secret too.
    let near = format!("{tok}!");
    http.get(format!("{}/bot{near}/getMe", gw.url))
        .send()
        .await
        .unwrap();
    let metrics = telepipe_tests::metrics(&gw.url).await;
    assert!(metrics.contains("telepipe_calls_total"));
    // Wait for the audit rows (the rejected call's row is written after its answer), then
    // read the database with its write-ahead log.
    gw.audit(9090, 4).await.expect("calls audited");
    gw.audit(0, 1).await.expect("refusal audited");
    let db = gw.store_text().await.expect("the store's contents");
    assert!(db.contains("sendMessage"), "the audit log has the calls");
    let log = gw.log();
    for (what, text) in [
        ("metrics", metrics.as_str()),
        ("log", log.as_str()),
        ("store", &db),
    ] {
        assert!(
            !text.contains(&secret),
            "the token's secret is in the {what}"
        );
    }
}

/// A bot may put its own token in a call (here a message quoting it): Telegram gets it as
/// sent and the bot gets the echo as Telegram answered, while on the bus (Kafka mode,
/// `tests/token_scan.rs`) and in the record it never appears in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_a_parameter_reaches_telegram_and_comes_back() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 9091;
    let tok = token(bot);
    let text = format!("my token is {tok}, keep it safe");
    let r = client()
        .post(format!("{}/bot{tok}/sendMessage", gw.url))
        .json(&json!({"chat_id": 5, "text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["text"], text, "the answer as Telegram gave it");
    let calls = control.calls(bot, Some("sendMessage")).await.unwrap();
    assert!(
        calls[0].to_string().contains(&tok),
        "Telegram got the text as sent: {}",
        calls[0]
    );
    let rows = gw.audit(bot, 1).await.unwrap();
    let recorded = serde_json::to_string(&rows[0].params).unwrap();
    assert!(
        !recorded.contains(&tok) && recorded.contains("<token>"),
        "{recorded}"
    );
}

/// With Telegram's flood limits on (`telepipe sandbox --flood-limits`), a burst to one private
/// chat gets Telegram's own 429 past the third message, passed to the bot as upstream sent it;
/// reads are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_telegrams_429_with_retry_after() {
    let sandbox = Proc::sandbox(&["--flood-limits"]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let base = format!("{}/bot{}", gw.url, token(1601));
    let http = client();
    // Sent one after another until two are refused; when each was sent decides what it
    // may get: the bucket holds three and refills one a second, so past the third, anything
    // sent within half a second of the first must be refused (it reaches Telegram well inside
    // the second); later ones may pass on a slow machine, whose bucket has refilled.
    let (first, mut codes, mut sent) = (std::time::Instant::now(), Vec::new(), Vec::new());
    for n in 0..10 {
        sent.push(first.elapsed());
        let r = http
            .get(format!("{base}/sendMessage?chat_id=42&text=m{n}"))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            let v = assert_shaped(r, 429).await;
            assert_eq!(v["parameters"]["retry_after"], 1, "{v}");
            assert_eq!(v["description"], "Too Many Requests: retry after 1");
        }
        if codes.iter().filter(|&&c| c == 429).count() == 2 {
            break;
        }
    }
    assert_eq!(codes[..3], [200, 200, 200], "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    for (n, at) in sent.iter().enumerate().skip(3) {
        if *at < std::time::Duration::from_millis(500) {
            assert_eq!(codes[n], 429, "message {n} at {at:?}: {codes:?}");
        }
    }
    let r = http.get(format!("{base}/getMe")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
