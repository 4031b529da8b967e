//! Send methods with a URL: the gateway fetches the file (SSRF-safe) and sends it as multipart
//! within the Bot API's limits, through MTProto beyond them. A stand-in public server listens
//! on 127.0.0.2, let through with `--allow-url-networks 127.0.0.2/32`; 127.0.0.1 stays private.

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use telepipe_tests::{assert_shaped, client, post_json, post_multipart, token, Control, Proc};

/// A multipart `document` part of `mib` MiB, streamed (never held whole by the test).
fn streamed_part(mib: usize, name: &'static str) -> reqwest::multipart::Part {
    let chunks = (0..mib).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(pattern(1 << 20))));
    reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        (mib as u64) << 20,
    )
    .file_name(name)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect()
}

/// The stand-in public server: `/doc.pdf` (1 MB), `/big.bin` (60 MB, streamed), and
/// `/private` redirecting to loopback.
async fn files_server() -> String {
    let app = Router::new()
        .route("/doc.pdf", get(|| async { pattern(1 << 20) }))
        .route(
            "/big.bin",
            get(|| async {
                let chunks =
                    (0..60).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(pattern(1 << 20))));
                (
                    [("content-length", (60u64 << 20).to_string())],
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }),
        )
        .route(
            "/private",
            get(|| async { Redirect::temporary("http://127.0.0.1:9/doc.pdf") }),
        );
    telepipe_tests::public_server(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_fetched_by_the_gateway_and_sent_as_an_upload() {
    let files = files_server().await;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--allow-url-networks", "127.0.0.2/32"])
        .await
        .unwrap();
    let bot = 1001;
    let send = |body: Value| post_json_to(&gw.url, bot, body);

    let v = send(json!({"chat_id": 5, "document": format!("{files}/doc.pdf")})).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["document"]["file_name"], "doc.pdf");
    assert_eq!(v["result"]["document"]["file_size"], 1 << 20);
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["encoding"], "multipart");
    let sha = hex::encode(Sha256::digest(pattern(1 << 20)));
    assert_eq!(
        calls[0]["params"]["document"]["file"]["sha256"],
        sha.as_str()
    );
    assert_eq!(calls[0]["params"]["chat_id"], "5");

    // `file_name` renames the file and is not sent upstream.
    let v = send(json!({"chat_id": 5, "document": format!("{files}/doc.pdf"),
        "file_name": "report.pdf", "caption": "hi"}))
    .await;
    assert_eq!(v["result"]["document"]["file_name"], "report.pdf", "{v}");
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    assert!(calls[1]["params"].get("file_name").is_none());
    assert_eq!(calls[1]["params"]["caption"], "hi");

    // Private space, directly or by redirect, is refused with a clear 400; nothing is sent.
    let port = files.rsplit(':').next().unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/doc.pdf"),
        format!("http://localhost:{port}/doc.pdf"),
        format!("http://2130706433:{port}/doc.pdf"),
        format!("{files}/private"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let r = client()
            .post(format!("{}/bot{}/sendDocument", gw.url, token(bot)))
            .json(&json!({"chat_id": 5, "document": url}))
            .send()
            .await
            .unwrap();
        let v = assert_shaped(r, 400).await;
        let d = v["description"].as_str().unwrap();
        assert!(
            d.starts_with("Bad Request: failed to get HTTP URL content"),
            "{url}: {d}"
        );
    }
    assert_eq!(
        control
            .calls(bot, Some("sendDocument"))
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The clear 400 of a gateway without MTProto for what needs it.
async fn assert_needs_mtproto(r: reqwest::Response) {
    let v = assert_shaped(r, 400).await;
    assert!(v["description"]
        .as_str()
        .unwrap()
        .contains("TELEGRAM_API_ID"));
}

async fn post_json_to(gw: &str, bot: i64, body: Value) -> Value {
    post_json(&format!("{gw}/bot{}/sendDocument", token(bot)), &body).await
}

/// Over the Bot API's 50 MB: uploaded through MTProto and sent by file_id, with flat memory;
/// without MTProto, a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_url_goes_through_mtproto() {
    let files = files_server().await;
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let mut flags = sandbox.mtproto_flags();
    flags.extend(["--allow-url-networks".into(), "127.0.0.2/32".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1002;
    let _ = post_json_to(
        &gw.url,
        bot,
        json!({"chat_id": 5, "document": format!("{files}/doc.pdf")}),
    )
    .await;
    let before = gw.status_kb("VmHWM");
    let v = post_json_to(
        &gw.url,
        bot,
        json!({"chat_id": 5, "document": format!("{files}/big.bin")}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["document"]["file_size"], 60 << 20);
    let grown = gw.status_kb("VmHWM").saturating_sub(before) / 1024;
    assert!(grown < 40, "peak memory grew {grown} MB for 60 MB");
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    let last = calls.last().unwrap();
    assert_eq!(last["encoding"], "json");
    assert!(
        last["params"]["document"].is_string(),
        "sent by file_id: {last}"
    );

    let plain = Proc::gateway(&sandbox.url, &["--allow-url-networks", "127.0.0.2/32"])
        .await
        .unwrap();
    let r = client()
        .post(format!("{}/bot{}/sendDocument", plain.url, token(bot)))
        .json(&json!({"chat_id": 5, "document": format!("{files}/big.bin")}))
        .send()
        .await
        .unwrap();
    assert_needs_mtproto(r).await;
}

/// A multipart file over the Bot API's 50 MB goes through MTProto (the other parts go along,
/// the file as its file_id); `file_name` renames an uploaded file and is not sent upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_multipart_files_go_through_mtproto_and_file_name_renames() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1003;
    let url = format!("{}/bot{}/sendDocument", gw.url, token(bot));

    let small = reqwest::multipart::Form::new()
        .text("chat_id", "5")
        .text("file_name", "renamed.txt")
        .part(
            "document",
            reqwest::multipart::Part::bytes(b"tiny".to_vec()).file_name("orig.txt"),
        );
    let v: Value = post_multipart(&url, small).await;
    assert_eq!(v["result"]["document"]["file_name"], "renamed.txt", "{v}");
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    assert_eq!(
        calls[0]["params"]["document"]["file"]["file_name"],
        "renamed.txt"
    );
    assert!(calls[0]["params"].get("file_name").is_none());

    let size = 60usize << 20;
    let big = reqwest::multipart::Form::new()
        .text("chat_id", "5")
        .text("caption", "sixty")
        .text("file_name", "sixty.bin")
        .part("document", streamed_part(60, "orig.bin"));
    let v: Value = post_multipart(&url, big).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["document"]["file_size"], size);
    assert_eq!(v["result"]["document"]["file_name"], "sixty.bin");
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    let last = calls.last().unwrap();
    assert!(
        last["params"]["document"].is_string(),
        "sent by file_id: {last}"
    );
    assert_eq!(last["params"]["caption"], "sixty");
    assert!(last["params"].get("file_name").is_none());
}

/// The same file sent again by the same bot, as the same kind under the same name, goes by
/// the file_id Telegram gave it the first time: no second upload. Another name or kind
/// uploads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_upload_twice_goes_by_its_cached_file_id() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1004;
    let content = pattern(300_000);
    let send = |method: &'static str, param: &'static str, name: &'static str| {
        let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
            param,
            reqwest::multipart::Part::bytes(content.clone()).file_name(name),
        );
        let url = format!("{}/bot{}/{method}", gw.url, token(bot));
        async move {
            let v: Value = post_multipart(url, form).await;
            assert_eq!(v["ok"], true, "{v}");
            v
        }
    };
    let first = send("sendDocument", "document", "a.bin").await;
    let second = send("sendDocument", "document", "a.bin").await;
    assert_eq!(
        first["result"]["document"]["file_unique_id"],
        second["result"]["document"]["file_unique_id"]
    );
    send("sendDocument", "document", "b.bin").await;
    send("sendVideo", "video", "a.bin").await;
    let docs = control.calls(bot, Some("sendDocument")).await.unwrap();
    assert_eq!(docs.len(), 3);
    assert!(
        docs[0]["params"]["document"]["file"].is_object(),
        "uploaded"
    );
    assert!(
        docs[1]["params"]["document"].is_string(),
        "by file_id: {}",
        docs[1]
    );
    assert!(
        docs[2]["params"]["document"]["file"].is_object(),
        "another name: uploaded"
    );
    let videos = control.calls(bot, Some("sendVideo")).await.unwrap();
    assert!(
        videos[0]["params"]["video"]["file"].is_object(),
        "another kind: uploaded"
    );
}

/// A bot whose very first call is a big upload: the gateway checks its token on the Bot API
/// (getMe) before signing in over MTProto, so a new bot works and a bad token never reaches
/// MTProto's sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_upload_as_a_bots_first_call() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1005;
    let size = 51usize << 20;
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "5")
        .part("document", streamed_part(51, "first.bin"));
    let v: Value = post_multipart(format!("{}/bot{}/sendDocument", gw.url, token(bot)), form).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["document"]["file_size"], size);
}

/// `upload<Type>`: the file is kept (MTProto `uploadMedia` to the bot itself), sent to nobody,
/// and its file_id works for the send methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_methods_keep_files_for_nobody() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1006;
    let upload =
        |method: &'static str, param: &'static str, extra: Vec<(&'static str, &'static str)>| {
            let mut form = reqwest::multipart::Form::new().text("chat_id", "5");
            for (k, v) in extra {
                form = form.text(k, v);
            }
            let form = form.part(
                param,
                reqwest::multipart::Part::bytes(pattern(70_000)).file_name("clip.bin"),
            );
            let url = format!("{}/bot{}/{method}", gw.url, token(bot));
            async move { post_multipart(url, form).await }
        };
    let doc = upload("uploadDocument", "document", vec![]).await;
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["result"]["file_type"], "document");
    assert_eq!(doc["result"]["file_size"], 70_000);
    assert!(doc["result"]["file_unique_id"].is_string());
    let video = upload(
        "uploadvideo",
        "video",
        vec![("duration", "3"), ("width", "320"), ("height", "240")],
    )
    .await;
    assert_eq!(video["result"]["file_type"], "video", "{video}");
    let photo = upload("uploadPhoto", "photo", vec![]).await;
    assert_eq!(photo["result"]["file_type"], "photo", "{photo}");
    let voice = upload("uploadVoice", "voice", vec![("duration", "4")]).await;
    assert_eq!(voice["result"]["file_type"], "voice", "{voice}");
    // Nothing was sent to anybody.
    let sent: Vec<Value> = control.calls(bot, None).await.unwrap();
    assert!(
        sent.iter()
            .all(|c| !c["method"].as_str().unwrap_or("").starts_with("send")),
        "{sent:?}"
    );
    // The file_id is the bot's to send.
    let id = doc["result"]["file_id"].as_str().unwrap();
    let v = post_json(
        &format!("{}/bot{}/sendDocument", gw.url, token(bot)),
        &json!({"chat_id": 5, "document": id}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["result"]["document"]["file_unique_id"],
        doc["result"]["file_unique_id"]
    );

    let plain = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let r = client()
        .post(format!("{}/bot{}/uploadDocument", plain.url, token(bot)))
        .multipart(reqwest::multipart::Form::new().part(
            "document",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
        ))
        .send()
        .await
        .unwrap();
    assert_needs_mtproto(r).await;
}

/// A file_id of another type than the method takes is downloaded and uploaded again as asked;
/// with `file_name`, under the new name; a file_id of the right type goes through untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retyped_and_renamed_file_ids_are_uploaded_again() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1007;
    let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
        "document",
        reqwest::multipart::Part::bytes(pattern(100_000)).file_name("clip.mp4"),
    );
    let sent: Value = post_multipart(
        format!("{}/bot{}/sendDocument", sandbox.url, token(bot)),
        form,
    )
    .await;
    let doc_id = sent["result"]["document"]["file_id"].as_str().unwrap();
    let base = format!("{}/bot{}", gw.url, token(bot));

    let v = post_json(
        &format!("{base}/sendVideo"),
        &json!({"chat_id": 5, "video": doc_id}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["video"]["file_size"], 100_000);
    let videos = control.calls(bot, Some("sendVideo")).await.unwrap();
    assert!(
        videos[0]["params"]["video"]["file"].is_object(),
        "uploaded again: {}",
        videos[0]
    );

    let v = post_json(
        &format!("{base}/sendDocument"),
        &json!({"chat_id": 5, "document": doc_id, "file_name": "renamed.mp4"}),
    )
    .await;
    assert_eq!(v["result"]["document"]["file_name"], "renamed.mp4", "{v}");

    let v = post_json(
        &format!("{base}/sendDocument"),
        &json!({"chat_id": 5, "document": doc_id}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let docs = control.calls(bot, Some("sendDocument")).await.unwrap();
    // [0] the sandbox upload, [1] the renamed re-upload, [2] untouched by file_id.
    assert_eq!(
        docs[1]["params"]["document"]["file"]["file_name"],
        "renamed.mp4"
    );
    assert_eq!(docs[2]["params"]["document"], doc_id);
}

/// 1.5 GB from a URL (ENHANCED.md: up to 2000 MB): fetched into the blob store, uploaded over
/// MTProto in 3000 parts, sent by file_id — with the gateway's peak memory flat. In CI's split
/// pass (blobs on S3, roles apart) 64 MiB keeps the run short; the path is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_of_one_and_a_half_gigabytes_goes_through_mtproto_with_flat_memory() {
    let mib: u64 = if telepipe_tests::split() { 64 } else { 1536 };
    let chunk = bytes::Bytes::from(pattern(1 << 20));
    let app = Router::new().route(
        "/huge.bin",
        get(move || {
            let chunk = chunk.clone();
            async move {
                let chunks = (0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                (
                    [("content-length", (mib << 20).to_string())],
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }
        }),
    );
    let files = telepipe_tests::public_server(app).await;

    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let mut flags = sandbox.mtproto_flags();
    flags.extend(["--allow-url-networks".into(), "127.0.0.2/32".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1008;
    // Warm up (sign-in, first allocations) so the peak measured is the transfer's.
    let small = post_json_to(
        &gw.url,
        bot,
        json!({"chat_id": 5, "document": format!("{files}/none")}),
    )
    .await;
    assert_eq!(small["ok"], false);
    let before = gw.status_kb("VmHWM");
    let v = post_json_to(
        &gw.url,
        bot,
        json!({"chat_id": 5, "document": format!("{files}/huge.bin"), "file_name": "huge.bin"}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["document"]["file_size"], mib << 20);
    assert_eq!(v["result"]["document"]["file_name"], "huge.bin");
    let grown = gw.status_kb("VmHWM").saturating_sub(before) / 1024;
    eprintln!("{mib} MiB URL upload: peak memory +{grown} MB");
    assert!(grown < 64, "peak memory grew {grown} MB for {mib} MiB");
    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    assert!(
        calls.last().unwrap()["params"]["document"].is_string(),
        "by file_id"
    );
    // Progress was reported while it went.
    let metrics = telepipe_tests::metrics(&gw.url).await;
    let sent: f64 = metrics
        .lines()
        .find(|l| l.starts_with("telepipe_upload_bytes_total{stage=\"mtproto\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    if !telepipe_tests::split() {
        assert!(sent >= (mib << 20) as f64, "{sent}");
    }
}
