//! No panic on any input: a few hundred random requests (verbs, paths, percent-escapes, content
//! types, bodies, truncated multipart) all get an HTTP answer; every error made by the gateway
//! is Bot API-shaped; none is the panic handler's 500; the gateway stays healthy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use telepipe_tests::{client, token, Proc};

const PATHS: &[&str] = &[
    "/bot{T}/getMe",
    "/bot{T}/sendMessage",
    "/bot{T}/test/getMe",
    "/bot{T}/",
    "/bot{T}",
    "/bot{T}//",
    "/bot{T}/a/b/c",
    "/bot{T}/%zz",
    "/bot{T}/%00",
    "/bot{T}/ünïcode",
    "/bot%ZZ/getMe",
    "/bot%3A/getMe",
    "/bot/getMe",
    "/bot",
    "/file/bot{T}/",
    "/file/bot{T}/x/../../etc",
    "/file/bot%ff/documents/x",
    "/file/bot{T}/documents/file_999.bin",
    "/",
    "/metrics",
    "/healthz",
    "/bot{T}/getUpdates?timeout=-5",
    "/bot{T}/getUpdates?timeout=abc",
    "/bot{T}/getUpdates?timeout=NaN&limit=-1&offset=-99999999999999999999",
    "/bot{T}/sendMessage?chat_id=%ff",
];

const TYPES: &[&str] = &[
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=zz",
    "multipart/form-data; boundary=\"q q\"",
    "text/plain",
    "application/octet-stream",
    "garbage/",
    "multipart/mixed; boundary=zz",
    ";;;",
];

fn body(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..8) {
        0 => Vec::new(),
        1 => b"{\"chat_id\": 1, \"text\": \"hi\"}".to_vec(),
        2 => b"{\"a\": [1, {\"b\": [[[[[[[[]]]]]]]]}], \"c\": 1e999}".to_vec(),
        3 => b"chat_id=1&text=%zz&&=&x".to_vec(),
        4 => b"--zz\r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--zz--\r\n".to_vec(),
        5 => b"--zz\r\ncontent-disposition: form-data; name=\"d\"; filename=\"x\"\r\n\r\nabc"
            .to_vec(),
        6 => b"--zz\r\ncontent-disposition: form-data\r\n\r\nno name\r\n--zz--\r\n".to_vec(),
        _ => (0..rng.gen_range(1..4096)).map(|_| rng.gen()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_break_the_gateway() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &["--call-timeout", "5"])
        .await
        .unwrap();
    let http = client();
    let mut rng = StdRng::seed_from_u64(20261124);
    let tok = token(99);
    for i in 0..400 {
        let path = PATHS[rng.gen_range(0..PATHS.len())].replace("{T}", &tok);
        let verb =
            ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"][rng.gen_range(0..7)];
        let ct = TYPES[rng.gen_range(0..TYPES.len())];
        let mut req = http.request(verb.parse().unwrap(), format!("{}{path}", gw.url));
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let r = req.body(body(&mut rng)).send().await;
        let r = r.unwrap_or_else(|e| panic!("request {i} {verb} {path} {ct}: no answer: {e}"));
        let status = r.status().as_u16();
        let head = verb == "HEAD";
        let text = r.text().await.unwrap_or_default();
        assert!(
            !text.contains("unexpected failure"),
            "request {i} {verb} {path} {ct}: the gateway panicked"
        );
        if status >= 400 && !head {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                panic!("request {i} {verb} {path} {ct}: {status} not JSON: {text}")
            });
            assert_eq!(v["ok"], false, "request {i}");
            assert_eq!(
                v["error_code"].as_u64(),
                Some(status as u64),
                "request {i}: {text}"
            );
        }
    }
    let r = http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
