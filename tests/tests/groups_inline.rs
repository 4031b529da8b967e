//! sendMediaGroup and answerInlineQuery with the gateway's upload powers: URLs of any size,
//! parts of any size, metadata, dedupe, and inline results kept and sent as cached ones.
//! A stand-in public server on 127.0.0.2 serves the test media (`media/testdata`) and big files.

use serde_json::{json, Value};
use telepipe_tests::{
    media_routes, post_json, post_multipart, public_server, testdata, token, Control, Proc,
};

/// `/<name>`: a test file; `/big.bin`: 60 MB, streamed; `/big.jpg`: a 6 MB JPEG (the test
/// photo with padding), over Telegram's 5 MB for photo URLs.
async fn media_server() -> String {
    let app = media_routes()
        .route(
            "/big.bin",
            axum::routing::get(|| async {
                let chunks = (0..60)
                    .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i as u8; 1 << 20])));
                (
                    [("content-length", (60u64 << 20).to_string())],
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }),
        )
        .route(
            "/big.jpg",
            axum::routing::get(|| async {
                let mut jpg = testdata("photo.jpg");
                jpg.resize(6 << 20, 0);
                ([("content-type", "image/jpeg")], jpg)
            }),
        );
    public_server(app).await
}

async fn gateway(sandbox: &Proc) -> Proc {
    let mut flags = sandbox.mtproto_flags();
    flags.extend(["--allow-url-networks".into(), "127.0.0.2/32".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Proc::gateway(&sandbox.url, &flags).await.unwrap()
}

/// The `media` (or `results`) upstream got, whether it came as JSON or as a text part.
fn json_param(call: &Value, name: &str) -> Value {
    match &call["params"][name] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_groups_take_urls_and_parts_of_any_size() {
    let files = media_server().await;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = gateway(&sandbox).await;
    let bot = 1201;
    let url = format!("{}/bot{}/sendMediaGroup", gw.url, token(bot));

    let v = post_json(
        &url,
        &json!({"chat_id": 5, "media": [
            {"type": "video", "media": format!("{files}/video.mp4"), "caption": "v"},
            {"type": "photo", "media": format!("{files}/photo.jpg")},
            {"type": "document", "media": format!("{files}/big.bin"), "file_name": "big.dat"},
        ]}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let sent = v["result"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[0]["video"]["width"], 160,
        "metadata from the file: {v}"
    );
    assert_eq!(sent[0]["caption"], "v");
    assert!(sent[1]["photo"].is_array());
    assert_eq!(sent[2]["document"]["file_size"], 60 << 20);
    assert_eq!(sent[2]["document"]["file_name"], "big.dat");
    let calls = control.calls(bot, Some("sendMediaGroup")).await.unwrap();
    let media = json_param(&calls[0], "media");
    assert_eq!(media[0]["media"], "attach://telepipe_media0", "{media}");
    assert_eq!(media[0]["duration"], 2);
    assert!(media[0].get("file_name").is_none());
    assert!(
        !media[2]["media"].as_str().unwrap().starts_with("attach://"),
        "over 50 MB: by file_id after MTProto: {media}"
    );

    // attach:// parts, then the same again: by cached file_ids, no file part sent.
    let form = || {
        reqwest::multipart::Form::new()
            .text("chat_id", "5")
            .text(
                "media",
                json!([
                    {"type": "photo", "media": "attach://one"},
                    {"type": "audio", "media": "attach://two"},
                ])
                .to_string(),
            )
            .part(
                "one",
                reqwest::multipart::Part::bytes(testdata("photo.png")).file_name("a.png"),
            )
            .part(
                "two",
                reqwest::multipart::Part::bytes(testdata("audio.mp3")).file_name("b.mp3"),
            )
    };
    for round in 0..2 {
        let v: Value = post_multipart(&url, form()).await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["result"][1]["audio"]["performer"], "Sandbox Band", "{v}");
        let calls = control.calls(bot, Some("sendMediaGroup")).await.unwrap();
        let last = calls.last().unwrap();
        let media = json_param(last, "media");
        let by_id = media
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m["media"].as_str().unwrap().starts_with("attach://"));
        assert_eq!(by_id, round == 1, "round {round}: {last}");
        assert!(last["params"].get("one").is_none(), "{last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_results_over_url_limits_are_sent_cached() {
    let files = media_server().await;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = gateway(&sandbox).await;
    let bot = 1202;
    let url = format!("{}/bot{}/answerInlineQuery", gw.url, token(bot));
    let v = post_json(
        &url,
        &json!({"inline_query_id": "q1", "cache_time": 0, "results": [
            {"type": "photo", "id": "big", "photo_url": format!("{files}/big.jpg"),
             "thumbnail_url": format!("{files}/photo.jpg"), "caption": "large"},
            {"type": "photo", "id": "small", "photo_url": format!("{files}/photo.jpg"),
             "thumbnail_url": format!("{files}/photo.jpg")},
            {"type": "file", "id": "voice", "file_url": format!("{files}/voice.ogg")},
        ]}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let calls = control.calls(bot, Some("answerInlineQuery")).await.unwrap();
    let results = json_param(&calls[0], "results");
    assert_eq!(results[0]["type"], "photo");
    assert!(results[0]["photo_file_id"].is_string(), "{results}");
    assert!(results[0].get("photo_url").is_none());
    assert_eq!(results[0]["caption"], "large");
    assert_eq!(
        results[1]["photo_url"],
        format!("{files}/photo.jpg"),
        "within limits: as is"
    );
    assert_eq!(results[2]["type"], "voice", "detected: {results}");
    assert!(results[2]["voice_file_id"].is_string());
    assert_eq!(results[2]["title"], "voice.ogg");
    assert_eq!(calls[0]["params"]["cache_time"], 0);

    // A part `inline_file<N>` is the file of result N.
    let form = reqwest::multipart::Form::new()
        .text("inline_query_id", "q2")
        .text(
            "results",
            json!([
                {"type": "article", "id": "a", "title": "t",
                 "input_message_content": {"message_text": "hi"}},
                {"type": "file", "id": "clip", "title": "Clip"},
            ])
            .to_string(),
        )
        .part(
            "inline_file1",
            reqwest::multipart::Part::bytes(testdata("video.mp4")).file_name("clip.mp4"),
        );
    let v: Value = post_multipart(&url, form).await;
    assert_eq!(v["ok"], true, "{v}");
    let calls = control.calls(bot, Some("answerInlineQuery")).await.unwrap();
    let results = json_param(&calls[1], "results");
    assert_eq!(results[0]["type"], "article");
    assert_eq!(results[1]["type"], "video", "{results}");
    assert_eq!(results[1]["title"], "Clip");
    assert!(calls[1]["params"].get("inline_file1").is_none());
}
