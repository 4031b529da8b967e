//! Files judged by their content (libmediainfo): `sendFile` and `uploadFile` choose the kind,
//! every send gets the metadata its request lacks, and `upload<Type>` keeps files through the
//! storage chat when there is no MTProto. The media are the small real files in
//! `media/testdata` (made by its `make.sh`).

use serde_json::{json, Value};
use telepipe_tests::{
    assert_shaped, client, media_routes, post_json, post_multipart, public_server, testdata, token,
    Control, Proc,
};

/// A multipart call with `file` as the part `param` under a name that says nothing of its
/// type, so what is judged is the content.
async fn send(
    gw: &str,
    bot: i64,
    method: &str,
    param: &str,
    file: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut form = reqwest::multipart::Form::new().text("chat_id", "5");
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    let form = form.part(
        param.to_owned(),
        reqwest::multipart::Part::bytes(testdata(file)).file_name("upload.bin"),
    );
    post_multipart(format!("{gw}/bot{}/{method}", token(bot)), form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_file_sends_each_file_as_its_content_says() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let gw = Proc::gateway(&sandbox.url, &["--allow-url-networks", "127.0.0.2/32"])
        .await
        .unwrap();
    let bot = 1101;
    let cases = [
        ("photo.jpg", "photo", "sendPhoto"),
        ("sticker.webp", "sticker", "sendSticker"),
        ("animation.gif", "animation", "sendAnimation"),
        ("silent.mp4", "animation", "sendAnimation"),
        ("video.mp4", "video", "sendVideo"),
        ("voice.ogg", "voice", "sendVoice"),
        ("audio.mp3", "audio", "sendAudio"),
        ("image.bmp", "document", "sendDocument"),
    ];
    for (file, kind, method) in cases {
        let v = send(&gw.url, bot, "sendFile", "file", file, &[("caption", file)]).await;
        assert_eq!(v["ok"], true, "{file}: {v}");
        assert!(
            v["result"][kind].is_object() || v["result"][kind].is_array(),
            "{file} as {kind}: {v}"
        );
        let calls = control.calls(bot, Some(method)).await.unwrap();
        let last = calls
            .last()
            .unwrap_or_else(|| panic!("{file}: no {method} upstream"));
        assert_eq!(last["params"]["caption"], file);
        assert!(last["params"][kind]["file"].is_object(), "{file}: {last}");
        assert!(last["params"].get("file").is_none());
    }
    // What the file says was added to what the request lacked.
    let video = &control.calls(bot, Some("sendVideo")).await.unwrap()[0]["params"];
    assert_eq!(
        (
            &video["width"],
            &video["height"],
            &video["duration"],
            &video["supports_streaming"]
        ),
        (&json!("160"), &json!("120"), &json!("2"), &json!("true")),
        "{video}"
    );
    let audio = send(&gw.url, bot, "sendFile", "file", "audio.mp3", &[]).await;
    assert_eq!(
        audio["result"]["audio"]["performer"], "Sandbox Band",
        "{audio}"
    );
    assert_eq!(audio["result"]["audio"]["title"], "Test Tone");
    assert_eq!(audio["result"]["audio"]["duration"], 2);
    let voice = send(&gw.url, bot, "sendFile", "file", "voice.ogg", &[]).await;
    assert_eq!(voice["result"]["voice"]["duration"], 4, "{voice}");

    // A URL is fetched and judged the same way.
    let files = public_server(media_routes()).await;
    let v = post_json(
        &format!("{}/bot{}/sendFile", gw.url, token(bot)),
        &json!({"chat_id": 5, "file": format!("{files}/round.mp4")}),
    )
    .await;
    assert_eq!(v["result"]["video"]["width"], 240, "{v}");
    assert_eq!(v["result"]["video"]["duration"], 3);

    // A file_id goes by the method of its type.
    let voice_id = voice["result"]["voice"]["file_id"].as_str().unwrap();
    let v = post_json(
        &format!("{}/bot{}/sendFile", gw.url, token(bot)),
        &json!({"chat_id": 5, "file": voice_id}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v}");
    let voices = control.calls(bot, Some("sendVoice")).await.unwrap();
    assert_eq!(voices.last().unwrap()["params"]["voice"], voice_id);

    // No file, or a file_id that is none: the Bot API's own 400.
    for body in [
        json!({"chat_id": 5}),
        json!({"chat_id": 5, "file": "not-a-file-id"}),
    ] {
        let r = client()
            .post(format!("{}/bot{}/sendFile", gw.url, token(bot)))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_shaped(r, 400).await;
    }
}

/// Values the request gives win over the file's; the rest is filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_wins_over_the_file() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let bot = 1102;
    let v = send(
        &gw.url,
        bot,
        "sendVideo",
        "video",
        "video.mp4",
        &[("width", "999")],
    )
    .await;
    assert_eq!(v["result"]["video"]["width"], 999, "{v}");
    assert_eq!(v["result"]["video"]["height"], 120);
    assert_eq!(v["result"]["video"]["duration"], 2);
    let v = send(
        &gw.url,
        bot,
        "sendAudio",
        "audio",
        "audio.mp3",
        &[("title", "Mine")],
    )
    .await;
    assert_eq!(v["result"]["audio"]["title"], "Mine", "{v}");
    assert_eq!(v["result"]["audio"]["performer"], "Sandbox Band");
    let v = send(
        &gw.url,
        bot,
        "sendVideoNote",
        "video_note",
        "round.mp4",
        &[],
    )
    .await;
    assert_eq!(v["result"]["video_note"]["length"], 240, "{v}");
    assert_eq!(v["result"]["video_note"]["duration"], 3);
}

/// Over MTProto the metadata goes into the document's attributes: a later send by file_id
/// shows it; the same upload again answers the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_file_detects_and_keeps_metadata_over_mtproto() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let flags = sandbox.mtproto_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gw = Proc::gateway(&sandbox.url, &flags).await.unwrap();
    let bot = 1103;
    let up = send(&gw.url, bot, "uploadFile", "file", "video.mp4", &[]).await;
    assert_eq!(up["result"]["file_type"], "video", "{up}");
    let id = up["result"]["file_id"].as_str().unwrap();
    let v = post_json(
        &format!("{}/bot{}/sendVideo", gw.url, token(bot)),
        &json!({"chat_id": 5, "video": id}),
    )
    .await;
    assert_eq!(v["result"]["video"]["width"], 160, "{v}");
    assert_eq!(v["result"]["video"]["duration"], 2);

    let audio = send(&gw.url, bot, "uploadFile", "file", "audio.mp3", &[]).await;
    assert_eq!(audio["result"]["file_type"], "audio", "{audio}");
    let v = post_json(
        &format!("{}/bot{}/sendAudio", gw.url, token(bot)),
        &json!({"chat_id": 5, "audio": audio["result"]["file_id"]}),
    )
    .await;
    assert_eq!(v["result"]["audio"]["performer"], "Sandbox Band", "{v}");
    let again = send(&gw.url, bot, "uploadFile", "file", "audio.mp3", &[]).await;
    assert_eq!(again["result"]["file_id"], audio["result"]["file_id"]);
    assert_eq!(again["result"]["file_size"], testdata("audio.mp3").len());
    let photo = send(&gw.url, bot, "uploadFile", "file", "photo.png", &[]).await;
    assert_eq!(photo["result"]["file_type"], "photo", "{photo}");
}

/// Without MTProto, `upload<Type>` keeps a file by posting it to the storage chat, taking the
/// file_id and deleting the message; without either, a clear 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_chat_keeps_files_without_mtproto() {
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let control = Control::new(&sandbox);
    let chat = "-1001234567890";
    let gw = Proc::gateway(&sandbox.url, &["--storage-chat-id", chat])
        .await
        .unwrap();
    let bot = 1104;
    let v = send(
        &gw.url,
        bot,
        "uploadVoice",
        "voice",
        "voice.ogg",
        &[("chat_id", "5")],
    )
    .await;
    assert_eq!(v["result"]["file_type"], "voice", "{v}");
    let sent = control.calls(bot, Some("sendVoice")).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["params"]["chat_id"], chat,
        "posted to the storage chat only"
    );
    assert_eq!(sent[0]["params"]["duration"], "4");
    let deleted = control.calls(bot, Some("deleteMessage")).await.unwrap();
    assert_eq!(deleted.len(), 1, "the message is deleted");
    assert_eq!(
        deleted[0]["params"]["chat_id"]
            .to_string()
            .trim_matches('"'),
        chat
    );
    // The kept file is the bot's to send anywhere.
    let v = post_json(
        &format!("{}/bot{}/sendVoice", gw.url, token(bot)),
        &json!({"chat_id": 5, "voice": v["result"]["file_id"]}),
    )
    .await;
    assert_eq!(v["result"]["voice"]["duration"], 4, "{v}");
    let v = send(&gw.url, bot, "uploadFile", "file", "photo.jpg", &[]).await;
    assert_eq!(v["result"]["file_type"], "photo", "{v}");

    let plain = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(testdata("photo.jpg")).file_name("p.jpg"),
    );
    let r = client()
        .post(format!("{}/bot{}/uploadFile", plain.url, token(bot)))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let v = assert_shaped(r, 400).await;
    let d = v["description"].as_str().unwrap();
    assert!(
        d.contains("TELEGRAM_API_ID") && d.contains("--storage-chat-id"),
        "{d}"
    );
}
