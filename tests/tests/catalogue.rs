//! Every method of the official catalogue (`schemas/api.json`, Bot API 10.1), sent through
//! the gateway in each of the four encodings, reaches the sandbox with the same method, HTTP
//! verb, encoding and parameters — but setWebhook, which the gateway answers itself.

use serde_json::{json, Map, Value};
use telepipe_tests::{client, token, Control, Proc};

fn catalogue() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/api.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("api.json"))
        .expect("valid JSON");
    // The version this test (and the gateway's catalogue) pins.
    assert_eq!(v["version"], schemas::catalogue::VERSION);
    v
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    Query,
    Form,
    Json,
    Multipart,
}

/// A value of the field's first type; a file for InputFile fields in multipart.
fn dummy(name: &str, types: &[Value]) -> Value {
    let t = types.first().and_then(Value::as_str).unwrap_or("String");
    match t {
        _ if name == "timeout" => json!(0),
        "Integer" => json!(7),
        "Float" => json!(1.5),
        "Boolean" => json!(true),
        "String" => json!(format!("text-{name}")),
        t if t.starts_with("Array of") => json!([]),
        "InputFile" => json!("file-id"),
        _ => json!({}),
    }
}

fn is_file(types: &[Value]) -> bool {
    types.iter().any(|t| t == "InputFile")
}

/// A parameter as sent: name, value, whether it goes as a file part.
type Sent = Vec<(String, Value, bool)>;

/// The parameters as sent and as the sandbox should record them.
fn params(method: &Value, enc: Encoding) -> (Sent, Map<String, Value>) {
    let mut sent = Vec::new();
    let mut expected = Map::new();
    for f in method["fields"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or_default().to_owned();
        let types = f["types"].as_array().cloned().unwrap_or_default();
        let v = dummy(&name, &types);
        let file = enc == Encoding::Multipart && is_file(&types);
        let as_text = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if file {
            let content = format!("file content of {name}");
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()));
            expected.insert(
                name.clone(),
                json!({"file": {"file_name": format!("{name}.bin"), "size": content.len(), "sha256": sha}}),
            );
            sent.push((name, Value::String(content), true));
        } else if enc == Encoding::Json {
            expected.insert(name.clone(), v.clone());
            sent.push((name, v, false));
        } else {
            expected.insert(name.clone(), Value::String(as_text.clone()));
            sent.push((name, Value::String(as_text), false));
        }
    }
    (sent, expected)
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    tok: &str,
    name: &str,
    enc: Encoding,
    sent: &Sent,
) -> reqwest::Response {
    let url = format!("{base}/bot{tok}/{name}");
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let req = match enc {
        Encoding::Query => {
            let q: Vec<(String, String)> =
                sent.iter().map(|(k, v, _)| (k.clone(), text(v))).collect();
            http.get(url).query(&q)
        }
        Encoding::Form => {
            let q: Vec<(String, String)> =
                sent.iter().map(|(k, v, _)| (k.clone(), text(v))).collect();
            http.post(url).form(&q)
        }
        Encoding::Json => {
            let m: Map<String, Value> = sent
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            http.post(url).json(&m)
        }
        Encoding::Multipart => {
            let mut form = reqwest::multipart::Form::new();
            for (k, v, file) in sent {
                form = if *file {
                    form.part(
                        k.clone(),
                        reqwest::multipart::Part::bytes(text(v).into_bytes())
                            .file_name(format!("{k}.bin"))
                            .mime_str("application/octet-stream")
                            .unwrap(),
                    )
                } else {
                    form.text(k.clone(), text(v))
                };
            }
            http.post(url).multipart(form)
        }
    };
    req.send().await.expect("the gateway answers")
}

/// 178 methods × 4 encodings through the gateway (all but setWebhook and getUpdates, which
/// the gateway answers itself): each arrives as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_in_every_encoding_reaches_upstream_unchanged() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let control = Control::new(&sandbox);
    let http = client();
    let api = catalogue();
    let methods = api["methods"].as_object().unwrap();
    assert_eq!(methods.len(), 180);

    for (i, enc) in [
        Encoding::Query,
        Encoding::Form,
        Encoding::Json,
        Encoding::Multipart,
    ]
    .into_iter()
    .enumerate()
    {
        // One bot per encoding, so the recorded calls of each pass are easy to tell apart.
        let bot = 7_000_000 + i as i64;
        let tok = token(bot);
        let mut expected_all = Vec::new();
        for (name, m) in methods {
            // The gateway keeps webhooks itself (ENHANCED.md): setWebhook never reaches
            // Telegram as sent (tests/webhooks.rs covers it); getUpdates is answered from the
            // updates the gateway polls for (tests/polled.rs).
            if name == "setWebhook" || name == "getUpdates" {
                continue;
            }
            let (sent, expected) = params(m, enc);
            let resp = send(&http, &gw.url, &tok, name, enc, &sent).await;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            if status == 400 && body.contains("multipart") {
                panic!("{name} {enc:?}: {body}");
            }
            assert!(
                serde_json::from_str::<Value>(&body).is_ok(),
                "{name} {enc:?}: status {status}, non-JSON body {body}"
            );
            expected_all.push((name.clone(), expected));
        }
        let calls = control.calls(bot, None).await.unwrap();
        let missing: Vec<&String> = expected_all
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !calls.iter().any(|c| c["method"] == json!(n)))
            .collect();
        assert!(
            missing.is_empty(),
            "{enc:?}: never reached the sandbox: {missing:?}"
        );
        assert_eq!(
            calls.len(),
            178,
            "{enc:?}: the sandbox saw {} calls",
            calls.len()
        );
        for ((name, expected), call) in expected_all.iter().zip(&calls) {
            assert_eq!(call["method"], json!(name), "{enc:?}: order or name");
            let want_verb = if enc == Encoding::Query {
                "GET"
            } else {
                "POST"
            };
            assert_eq!(call["http_method"], json!(want_verb), "{name} {enc:?}");
            let want_enc = match enc {
                _ if expected.is_empty() && matches!(enc, Encoding::Query | Encoding::Form) => {
                    "none"
                }
                Encoding::Query => "query",
                Encoding::Form => "form",
                Encoding::Json => "json",
                Encoding::Multipart => "multipart",
            };
            assert_eq!(call["encoding"], json!(want_enc), "{name} {enc:?}");
            assert_eq!(
                call["params"],
                Value::Object(expected.clone()),
                "{name} {enc:?}: parameters changed on the way"
            );
        }
    }
}

/// Answers come back exactly as upstream sent them: same status, content type and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_byte_for_byte() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let tok = token(424242);
    for (verb, path, body) in [
        ("GET", "getMe", None),
        ("GET", "getWebhookInfo", None),
        (
            "POST",
            "sendMessage",
            Some(json!({"chat_id": "not-a-chat", "text": "x"})),
        ),
        (
            "POST",
            "deleteMessage",
            Some(json!({"chat_id": 5, "message_id": 999})),
        ),
        ("GET", "noSuchMethod", None),
        ("GET", "test/getMe", None),
    ] {
        let mut out = Vec::new();
        for base in [&sandbox.url, &gw.url] {
            let url = format!("{base}/bot{tok}/{path}");
            let req = match (&body, verb) {
                (Some(b), _) => http.post(url).json(b),
                (None, _) => http.get(url),
            };
            let r = req.send().await.unwrap();
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap();
            out.push((status, ct, bytes));
        }
        assert_eq!(out[0], out[1], "{path}: direct vs through the gateway");
    }
    // `%3A` for the token's colon, as some libraries send it.
    let encoded = tok.replace(':', "%3A");
    let a = http
        .get(format!("{}/bot{tok}/getMe", sandbox.url))
        .send()
        .await
        .unwrap();
    let b = http
        .get(format!("{}/bot{encoded}/getMe", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(a.bytes().await.unwrap(), b.bytes().await.unwrap());
}
