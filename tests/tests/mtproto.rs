//! Files over the Bot API's limits come through MTProto: the real grammers client in the
//! gateway, logged in as the bot, against the sandbox's MTProto face.

use serde_json::{json, Value};
use std::time::Duration;
use telepipe_tests::{assert_shaped, client, get_json, post_json, split, token, Proc};

/// A synthetic document of `size` bytes in the sandbox's world: (file_id, sha256).
async fn big_file(sandbox: &Proc, bot: i64, size: u64, seed: u64) -> (String, String) {
    let v = post_json(
        &format!("{}/control/files", sandbox.url),
        &json!({"bot_id": bot, "size": size, "file_name": "huge.bin", "seed": seed}),
    )
    .await;
    (
        v["file_id"].as_str().unwrap().to_owned(),
        v["sha256"].as_str().unwrap().to_owned(),
    )
}

/// 1 GiB (64 MiB when the suite runs split over Kafka, to keep CI short): getFile answers
/// the File object, the stored bytes hash to the sandbox's sha256 (the ETag is the gateway's
/// own hash, taken while streaming), ranges match the content, the MTProto face served every
/// byte once, and the gateway's peak memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_file_downloads_through_mtproto_with_flat_memory() {
    let size: u64 = if split() { 64 << 20 } else { 1 << 30 };
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let mut flags = sandbox.mtproto_flags();
    flags.extend(["--file-wait".to_owned(), "600".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 801;
    let http = client();
    let (file_id, sha256) = big_file(&sandbox, bot, size, 5).await;
    // Warm up every path (getMe, a small getFile), then take the baseline.
    let (small, _) = big_file(&sandbox, bot, 1 << 20, 6).await;
    let r = http
        .get(format!(
            "{}/bot{}/getFile?file_id={small}",
            gw.url,
            token(bot)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = gw.status_kb("VmHWM");

    let r = http
        .get(format!(
            "{}/bot{}/getFile?file_id={file_id}",
            gw.url,
            token(bot)
        ))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["ok"], true, "{f}");
    assert_eq!(f["result"]["file_size"], size);
    let after = gw.status_kb("VmHWM");
    let grown_mb = after.saturating_sub(before) / 1024;
    eprintln!("VmHWM {before} kB -> {after} kB for {} MiB", size >> 20);
    assert!(
        grown_mb < 64,
        "peak memory grew {grown_mb} MB for a {size}-byte file"
    );

    let path = f["result"]["file_path"].as_str().unwrap();
    let url = format!("{}/storage/{path}", gw.url);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    assert_eq!(head.headers()["etag"], format!("\"{sha256}\"").as_str());
    // Ranges against the content regenerated here: the start, a chunk boundary, the end.
    for (chunk, at) in [
        (0u64, 0usize),
        (7, 4090),
        ((size >> 20) - 1, (1 << 20) - 100),
    ] {
        let expected = sandbox::control::synthetic_chunk(5, chunk);
        let start = (chunk << 20) + at as u64;
        let end = (start + 99).min(size - 1);
        let part = http
            .get(&url)
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        let body = part.bytes().await.unwrap();
        assert_eq!(
            &body[..],
            &expected[at..at + body.len()],
            "range at {start}"
        );
    }
    let served = get_json(&format!("{}/control/mtproto", sandbox.url)).await;
    // The 1 MiB warm-up file came through the Bot API (under its 20 MB cap).
    assert_eq!(served["bytes_served"], size);
}

/// The bot signs in once; its session is kept sealed in the store (no auth key in clear),
/// and a second download reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mtproto_session_is_kept_sealed_and_reused() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let flags = sandbox.mtproto_flags();
    let key = flags[flags.iter().position(|f| f == "--mtproto-key").unwrap() + 1].clone();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 802;
    for seed in [1, 2] {
        let (file_id, _) = big_file(&sandbox, bot, 21 << 20, seed).await;
        let r = client()
            .get(format!(
                "{}/bot{}/getFile?file_id={file_id}",
                gw.url,
                token(bot)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let stats = get_json(&format!("{}/control/mtproto", sandbox.url)).await;
    assert_eq!(stats["sign_ins"], 1);
    // The derived auth key never appears in clear in the store's files.
    let master: [u8; 32] = hex::decode(&key).unwrap().try_into().unwrap();
    let auth_key = hex::encode(telegram::mtproto::sandbox_auth_key(&master, bot));
    if !split() {
        let text = gw.store_text().await.unwrap();
        assert!(!text.contains(&auth_key), "auth key in clear in the store");
    }
}

/// Without TELEGRAM_API_ID/HASH the official answer for a big file stands unchanged; with
/// them, a file id MTProto cannot download (a web file) is a plain 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mtproto_big_files_get_the_official_answer() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let (file_id, _) = big_file(&sandbox, 803, 21 << 20, 3).await;
    let r = client()
        .get(format!(
            "{}/bot{}/getFile?file_id={file_id}",
            gw.url,
            token(803)
        ))
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 400).await;
    assert_eq!(v["description"], "Bad Request: file is too big");
}

/// `telepipe sandbox --env-file F` then `set -a; . F; telepipe serve`: the gateway reaches
/// both faces (a big file comes through MTProto) with nothing else configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_env_file_configures_a_gateway() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway_from_env_file(&sandbox).await.unwrap();
    let bot = 804;
    let (file_id, sha256) = big_file(&sandbox, bot, 21 << 20, 4).await;
    let f = get_json(&format!(
        "{}/bot{}/getFile?file_id={file_id}",
        gw.url,
        token(bot)
    ))
    .await;
    assert_eq!(f["ok"], true, "{f}");
    let head = client()
        .head(format!(
            "{}/storage/{}",
            gw.url,
            f["result"]["file_path"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["etag"], format!("\"{sha256}\"").as_str());
    let stats = get_json(&format!("{}/control/mtproto", sandbox.url)).await;
    assert_eq!(stats["bytes_served"], 21 << 20);
}
