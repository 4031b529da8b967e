//! getFile of any file (ENHANCED.md, "Files: downloads"): stored once, served token-free at
//! `/storage/<bot_username>/<name>` and at `/file/bot<token>/<bot_username>/<name>`, with
//! Range/HEAD/ETag; only the owner bot reaches its file through its token path; a download in
//! progress answers 202; official paths are cached while they stream; the local Bot API
//! server mode reads files from the shared folder.

use serde_json::Value;
use sha2::{Digest, Sha256};
use telepipe_tests::{
    assert_shaped, client, get_json, post_json, post_multipart, split, token, Control, Proc,
};

/// Sends `content` as a document straight to the sandbox (not through the gateway); returns
/// its file_id.
async fn upload(sandbox: &Proc, bot: i64, name: &str, content: Vec<u8>) -> String {
    let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
        "document",
        reqwest::multipart::Part::bytes(content).file_name(name.to_owned()),
    );
    let sent: Value = post_multipart(
        format!("{}/bot{}/sendDocument", sandbox.url, token(bot)),
        form,
    )
    .await;
    sent["result"]["document"]["file_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no file_id in {sent}"))
        .to_owned()
}

async fn get_file(gw: &Proc, bot: i64, file_id: &str) -> reqwest::Response {
    client()
        .get(format!(
            "{}/bot{}/getFile?file_id={file_id}",
            gw.url,
            token(bot)
        ))
        .send()
        .await
        .unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_file_stores_once_and_serves_token_free() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 701;
    let content = pattern(300_000, 1);
    let file_id = upload(&sandbox, bot, "report.pdf", content.clone()).await;

    let f: Value = get_file(&gw, bot, &file_id).await.json().await.unwrap();
    assert_eq!(f["ok"], true, "{f}");
    let path = f["result"]["file_path"].as_str().unwrap().to_owned();
    let (user, name) = path.split_once('/').unwrap();
    assert_eq!(user, format!("sandbox{bot}_bot"));
    // 128 bits of HMAC, then the original extension.
    assert_eq!(name.len(), 32 + ".pdf".len(), "{name}");
    assert!(name.ends_with(".pdf"));
    assert_eq!(f["result"]["file_size"], 300_000);
    assert_eq!(f["result"]["file_id"], file_id.as_str());
    let file_url = f["result"]["file_url"].as_str().unwrap();
    assert!(
        file_url.ends_with(&format!("/storage/{path}")),
        "{file_url}"
    );
    if !split() {
        assert_eq!(file_url, format!("{}/storage/{path}", gw.url));
    }

    // Asked again with another file_id of the same file (resent by id: a fresh file
    // reference): answered from the store, with the id the bot asked with.
    let resent = post_json(
        &format!("{}/bot{}/sendDocument", sandbox.url, token(bot)),
        &serde_json::json!({"chat_id": 5, "document": file_id}),
    )
    .await;
    let other_id = resent["result"]["document"]["file_id"].as_str().unwrap();
    assert_ne!(other_id, file_id);
    let again: Value = get_file(&gw, bot, other_id).await.json().await.unwrap();
    assert_eq!(again["result"]["file_path"], path.as_str());
    assert_eq!(again["result"]["file_id"], other_id);
    assert_eq!(control.calls(bot, Some("getFile")).await.unwrap().len(), 1);

    // Token-free, and through the token path: the same bytes and headers.
    let storage = format!("{}/storage/{path}", gw.url);
    for url in [
        storage.clone(),
        format!("{}/file/bot{}/{path}", gw.url, token(bot)),
    ] {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.headers()["content-type"], "application/pdf");
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        let disposition = r.headers()["content-disposition"].to_str().unwrap();
        assert!(disposition.contains(".pdf"), "{disposition}");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let expected = hex::encode(Sha256::digest(&content));
        assert_eq!(etag, format!("\"{expected}\""));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..]);

        let part = http
            .get(&url)
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 1000-1999/300000");
        assert_eq!(part.bytes().await.unwrap().as_ref(), &content[1000..2000]);

        let head = http.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "300000");
        assert!(head.bytes().await.unwrap().is_empty());

        let not_modified = http
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(not_modified.status(), 304);

        let beyond = http
            .get(&url)
            .header("range", "bytes=300000-")
            .send()
            .await
            .unwrap();
        assert_eq!(beyond.status(), 416);
    }

    // Guessing is no use; nothing outside the store is reachable.
    for bad in [
        format!("{}/storage/{user}/{}", gw.url, "0".repeat(32)),
        format!("{}/storage/{user}", gw.url),
        format!("{}/storage/../../etc/passwd", gw.url),
        format!("{}/storage/official:{bot}/documents/file_1.pdf", gw.url),
    ] {
        let r = http.get(&bad).send().await.unwrap();
        assert_shaped(r, 404).await;
    }
    let post = http.post(&storage).send().await.unwrap();
    assert_shaped(post, 405).await;
}

/// Another bot cannot fetch a file through its own token path, even knowing the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_cannot_fetch_another_bots_file() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let (owner, other) = (702, 703);
    let file_id = upload(&sandbox, owner, "secret.txt", b"for 702 only".to_vec()).await;
    let f: Value = get_file(&gw, owner, &file_id).await.json().await.unwrap();
    let path = f["result"]["file_path"].as_str().unwrap();
    let r = client()
        .get(format!("{}/file/bot{}/{path}", gw.url, token(other)))
        .send()
        .await
        .unwrap();
    assert_shaped(r, 404).await;
    let r = client()
        .get(format!("{}/file/bot{}/{path}", gw.url, token(owner)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "for 702 only");
}

/// A getFile that finds its file's download running answers 202 with progress; once the
/// download is done, the File object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_progress_answers_202_then_the_file() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--file-wait", "1"])
        .await
        .unwrap();
    let bot = 704;
    let file_id = upload(&sandbox, bot, "slow.bin", pattern(50_000, 2)).await;
    // Upstream's getFile takes 4 s: longer than the gateway waits.
    control
        .fault(serde_json::json!({"method": "getFile", "bot_id": bot,
            "action": {"kind": "delay", "ms": 4000}}))
        .await
        .unwrap();
    let first = get_file(&gw, bot, &file_id).await;
    assert_eq!(first.status(), 202);
    let v: Value = first.json().await.unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["error_code"], 202);
    assert_eq!(
        v["description"],
        "Your file is currently being downloaded. Please try again later."
    );
    assert_eq!(v["parameters"]["downloaded"], 0);
    // A second request while it runs: 202 at once, and no second download.
    let started = std::time::Instant::now();
    let second = get_file(&gw, bot, &file_id).await;
    assert_eq!(second.status(), 202);
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    let done = telepipe_tests::eventually(std::time::Duration::from_secs(20), || async {
        let r = get_file(&gw, bot, &file_id).await;
        (r.status() == 200).then_some(r)
    })
    .await
    .expect("the download finishes");
    let f: Value = done.json().await.unwrap();
    assert_eq!(f["result"]["file_size"], 50_000);
    assert_eq!(control.calls(bot, Some("getFile")).await.unwrap().len(), 1);
}

/// `/file/bot<token>/<official path>`: streamed from upstream while stored, then served from
/// the store even with upstream gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_paths_are_cached_while_streaming() {
    let mut sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 705;
    let content = pattern(200_000, 3);
    let file_id = upload(&sandbox, bot, "clip.mp4", content.clone()).await;
    // The official getFile, asked of the sandbox directly.
    let f = get_json(&format!(
        "{}/bot{}/getFile?file_id={file_id}",
        sandbox.url,
        token(bot)
    ))
    .await;
    let official = f["result"]["file_path"].as_str().unwrap().to_owned();
    let url = format!("{}/file/bot{}/{official}", gw.url, token(bot));
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap().as_ref(), &content[..]);
    sandbox.kill().await;
    let cached = telepipe_tests::eventually(std::time::Duration::from_secs(10), || async {
        let r = client().get(&url).send().await.unwrap();
        (r.status() == 200).then_some(r)
    })
    .await
    .expect("served from the store");
    assert_eq!(cached.headers()["content-type"], "video/mp4");
    assert_eq!(cached.bytes().await.unwrap().as_ref(), &content[..]);
    // Another bot's token does not reach the cached copy.
    let r = client()
        .get(format!("{}/file/bot{}/{official}", gw.url, token(706)))
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() >= 400);
}

/// With a local Bot API server (`--upstream-local`), getFile of any size answers an
/// absolute path in the shared folder, and the gateway reads the file from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bot_api_server_mode_reads_the_shared_folder() {
    let sandbox = Proc::sandbox(&["--local", "--max-upload", "104857600"])
        .await
        .unwrap();
    let shared = sandbox.data_dir();
    let gw = Proc::gateway(
        &sandbox.url,
        &["--upstream-local", &shared.display().to_string()],
    )
    .await
    .unwrap();
    let bot = 707;
    // Over the Bot API's 20 MB getFile cap.
    let content = pattern(21 * 1024 * 1024, 4);
    let expected = hex::encode(Sha256::digest(&content));
    let file_id = upload(&sandbox, bot, "big.bin", content).await;
    let f: Value = get_file(&gw, bot, &file_id).await.json().await.unwrap();
    assert_eq!(f["ok"], true, "{f}");
    assert_eq!(f["result"]["file_size"], 21 * 1024 * 1024);
    let path = f["result"]["file_path"].as_str().unwrap();
    let body = client()
        .get(format!("{}/storage/{path}", gw.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), expected);
}
