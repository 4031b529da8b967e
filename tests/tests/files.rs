//! Uploads and downloads through the gateway: a 60 MB chunked multipart upload streams
//! through with flat memory; the multipart quirks of real client libraries pass; file
//! downloads stream with Range, HEAD and ETag passed through.

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use telepipe_tests::{assert_shaped, client, token, Control, Proc};

/// Deterministic pseudo-random bytes, generated chunk by chunk (never held whole).
fn chunks(total: usize, chunk: usize) -> impl Iterator<Item = Bytes> {
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut left = total;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk);
        left -= n;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.extend_from_slice(&state.to_le_bytes());
        }
        v.truncate(n);
        Some(Bytes::from(v))
    })
}

/// `size` bytes sent chunked (no Content-Length) as a multipart `document` part of a
/// sendDocument; the gateway's answer.
async fn send_chunked(gw: &Proc, bot: i64, size: usize) -> Value {
    let boundary = "telepipe-test-boundary";
    let head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"document\"; filename=big.bin\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let parts = std::iter::once(Bytes::from(head))
        .chain(chunks(size, 64 * 1024))
        .chain(std::iter::once(Bytes::from(tail)));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        parts.map(Ok::<Bytes, std::io::Error>),
    ));
    let r = client()
        .post(format!("{}/bot{}/sendDocument", gw.url, token(bot)))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["document"]["file_size"], size);
    v
}

/// 60 MB sent chunked (no Content-Length) as a multipart file part: the sandbox receives every
/// byte, and the gateway's peak memory grows far less than the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_mb_chunked_upload_streams_with_flat_memory() {
    const SIZE: usize = 60 * 1024 * 1024;
    let sandbox = Proc::sandbox(&["--max-upload", &(100 * 1024 * 1024).to_string()])
        .await
        .unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 600;
    // The baseline is taken after a smaller upload down the same path: the threads, buffers
    // and allocator pages that path needs at all are then counted in it. With transparent huge
    // pages always on, those alone grew the peak by tens of MB on some machines, after a
    // warm-up with getMe only. What is left to measure is what grows with the file.
    send_chunked(&gw, bot, 1024 * 1024).await;
    let before = gw.status_kb("VmHWM");

    let mut hasher = Sha256::new();
    for c in chunks(SIZE, 64 * 1024) {
        hasher.update(&c);
    }
    let expected = hex::encode(hasher.finalize());
    send_chunked(&gw, bot, SIZE).await;

    let calls = control.calls(bot, Some("sendDocument")).await.unwrap();
    let file = &calls.last().unwrap()["params"]["document"]["file"];
    assert_eq!(file["size"], SIZE);
    assert_eq!(file["sha256"], Value::String(expected));
    assert_eq!(file["file_name"], "big.bin");

    let after = gw.status_kb("VmHWM");
    let grew_mb = after.saturating_sub(before) / 1024;
    eprintln!("gateway VmHWM {before} kB before, {after} kB after a 60 MB upload");
    assert!(
        grew_mb < 30,
        "peak memory grew by {grew_mb} MB for a 60 MB upload ({before} kB -> {after} kB)"
    );
}

/// What client libraries send: unquoted file names, lowercase part headers, random part
/// names referenced by attach://, an extra `method` part, parameters in the query string of
/// an upload POST, RFC 5987 file names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_library_multipart_quirks_pass() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let bot = 601;
    let b = "XyZ";
    let body = format!(
        "--{b}\r\ncontent-disposition: form-data; name=method\r\n\r\nsendDocument\r\n\
         --{b}\r\ncontent-disposition: form-data; name=\"document\"\r\n\r\nattach://f7a9c\r\n\
         --{b}\r\ncontent-disposition: form-data; name=\"f7a9c\"; filename=report.txt\r\n\
         content-type: text/plain\r\n\r\nhello world\r\n\
         --{b}\r\ncontent-disposition: form-data; name=\"thumbnail\"; filename*=UTF-8''na%C3%AFve.jpg\r\n\r\nJPEGDATA\r\n\
         --{b}--\r\n"
    );
    let r = http
        .post(format!(
            "{}/bot{}/sendDocument?chat_id=99&caption=from%20query",
            gw.url,
            token(bot)
        ))
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(body.into_bytes())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["document"]["file_name"], "report.txt");
    assert_eq!(v["result"]["caption"], "from query");
    let call = &control.calls(bot, Some("sendDocument")).await.unwrap()[0];
    let p = &call["params"];
    assert_eq!(p["method"], "sendDocument");
    assert_eq!(p["chat_id"], "99");
    assert_eq!(p["document"], "attach://f7a9c");
    assert_eq!(p["f7a9c"]["file"]["size"], 11);
    assert_eq!(p["thumbnail"]["file"]["file_name"], "naïve.jpg");
}

/// getFile, then the download through the gateway: whole, by Range, HEAD, If-None-Match,
/// with `%3A` in the token; a missing file is a shaped 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_stream_with_range_head_and_etag() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let tok = token(602);
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
        "document",
        reqwest::multipart::Part::bytes(content.clone()).file_name("data.bin"),
    );
    let sent: Value = http
        .post(format!("{}/bot{tok}/sendDocument", gw.url))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = sent["result"]["document"]["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let f: Value = http
        .get(format!("{}/bot{tok}/getFile?file_id={file_id}", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = f["result"]["file_path"].as_str().unwrap().to_owned();
    let url = format!("{}/file/bot{}/{path}", gw.url, tok.replace(':', "%3A"));

    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &content[..]);

    let part = http
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &content[1000..2000]);

    let tail = http
        .get(&url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &content[99_990..]);

    let bad = http
        .get(&url)
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 416);

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100000");
    assert!(head.bytes().await.unwrap().is_empty());

    let cached = http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    let missing = http
        .get(format!("{}/file/bot{tok}/documents/nope.bin", gw.url))
        .send()
        .await
        .unwrap();
    assert_shaped(missing, 404).await;
}

/// The official limits pass through: a photo over 10 MB and getFile over 20 MB are refused by
/// upstream with its own errors, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_limits_come_back_unchanged() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let http = client();
    let tok = token(603);
    let big = vec![7u8; 11 * 1024 * 1024];
    let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
        "photo",
        reqwest::multipart::Part::bytes(big).file_name("p.jpg"),
    );
    let r = http
        .post(format!("{}/bot{tok}/sendPhoto", gw.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 400).await;
    assert_eq!(v["description"], "Bad Request: PHOTO_SAVE_FILE_INVALID");

    let doc = vec![1u8; 21 * 1024 * 1024];
    let form = reqwest::multipart::Form::new().text("chat_id", "5").part(
        "document",
        reqwest::multipart::Part::bytes(doc).file_name("d.bin"),
    );
    let sent: Value = http
        .post(format!("{}/bot{tok}/sendDocument", gw.url))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["result"]["document"]["file_id"].as_str().unwrap();
    let r = http
        .get(format!("{}/bot{tok}/getFile?file_id={id}", gw.url))
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 400).await;
    assert_eq!(v["description"], "Bad Request: file is too big");

    let huge = reqwest::Body::wrap_stream(futures_util::stream::iter(
        super_chunks(51 * 1024 * 1024).map(Ok::<Bytes, std::io::Error>),
    ));
    let r = http
        .post(format!("{}/bot{tok}/sendDocument", gw.url))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_shaped(r, 413).await;
}

fn super_chunks(size: usize) -> impl Iterator<Item = Bytes> {
    let head = Bytes::from_static(
        b"--B\r\ncontent-disposition: form-data; name=\"document\"; filename=x.bin\r\n\r\n",
    );
    std::iter::once(head)
        .chain(chunks(size, 256 * 1024))
        .chain(std::iter::once(Bytes::from_static(b"\r\n--B--\r\n")))
}
