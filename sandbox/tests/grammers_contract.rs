//! Contract tests of the real grammers backend (`telegram::grammers::Grammers`, the code the
//! gateway runs against Telegram) against the sandbox's MTProto face: every method of the
//! `Mtproto` trait, end to end over loopback, sharing one world with the Bot API face.

use futures_util::StreamExt;
use sandbox::{Sandbox, SandboxConfig};
use schemas::{BotId, BotToken};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use telegram::file_id::{FileId, FileType};
use telegram::grammers::{Grammers, GrammersConfig, SessionVault};
use telegram::mtproto::{tl, Mtproto, MtprotoError, NewMedia, UploadStream};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct MemVault(Mutex<HashMap<BotId, Vec<u8>>>);

#[async_trait::async_trait]
impl SessionVault for MemVault {
    async fn load(&self, bot: BotId) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().get(&bot).cloned())
    }
    async fn save(&self, bot: BotId, s: Vec<u8>) -> Result<(), String> {
        self.0.lock().unwrap().insert(bot, s);
        Ok(())
    }
}

struct World {
    sb: Sandbox,
    http: String,
    cfg: GrammersConfig,
    stop: CancellationToken,
    /// The sandbox's files: removed with the world, after its servers are told to stop.
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn world() -> World {
    let dir = std::env::temp_dir().join(format!("tp-contract-{:x}", rand::random::<u64>()));
    let sb = Sandbox::new(SandboxConfig::new(dir.clone())).unwrap();
    let stop = CancellationToken::new();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_url = format!("http://{}", http.local_addr().unwrap());
    tokio::spawn(sandbox::serve(sb.clone(), http, stop.clone()));
    let mt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let std::net::SocketAddr::V4(addr) = mt.local_addr().unwrap() else {
        unreachable!()
    };
    tokio::spawn(sandbox::mtproto::serve(sb.clone(), mt, stop.clone()));
    World {
        cfg: GrammersConfig {
            api_id: 1,
            api_hash: "sandbox".into(),
            dc_addr: Some(addr),
            sandbox_key: Some(sb.mtproto_master_key()),
        },
        sb,
        http: http_url,
        stop,
        dir,
    }
}

fn token(bot: i64) -> BotToken {
    BotToken::parse(&sandbox::token_for(bot)).unwrap()
}

async fn new_file(w: &World, bot: i64, size: u64, seed: u64) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/control/files", w.http))
        .json(&serde_json::json!({"bot_id": bot, "size": size, "seed": seed}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["file_id"].as_str().unwrap().to_owned()
}

fn content(seed: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut i = 0;
    while out.len() < size {
        out.extend(sandbox::control::synthetic_chunk(seed, i));
        i += 1;
    }
    out.truncate(size);
    out
}

async fn collect(mut s: telegram::mtproto::ChunkStream) -> Result<Vec<u8>, MtprotoError> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

fn stream_of(bytes: Vec<u8>) -> UploadStream {
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(100_003)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_whole_and_from_any_offset() {
    let w = world().await;
    let bot = 901;
    let g = Grammers::new(w.cfg.clone(), Arc::new(MemVault::default()));
    let size = 3 * 1024 * 1024 + 77;
    let id = new_file(&w, bot, size as u64, 9).await;
    let fid = FileId::decode(&id).unwrap();
    let expected = content(9, size);
    let whole = collect(g.download(&token(bot), &fid, 0).await.unwrap())
        .await
        .unwrap();
    assert_eq!(whole.len(), size);
    assert!(whole == expected);
    for offset in [1, 512 * 1024, 1_572_987, size as u64 - 1] {
        let part = collect(g.download(&token(bot), &fid, offset).await.unwrap())
            .await
            .unwrap();
        assert!(part == expected[offset as usize..], "from {offset}");
    }
    // A file id the sandbox never issued: Telegram's refusal, as a bad request.
    let bogus = FileId::common(FileType::Document, 2, vec![1], 12345, 678);
    let err = collect(
        g.download(&token(bot), &bogus, 0)
            .await
            .unwrap_or_else(|e| Box::pin(futures_util::stream::once(async move { Err(e) }))),
    )
    .await
    .unwrap_err();
    assert!(err.is_bad_request(), "{err}");
}

/// A bot's MTProto client runs on the runtime the backend was made on (a process's shared
/// one): made by a call on a lane (`lifecycle::lanes`) that then stops, it goes on serving
/// the bot's next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bots_client_outlives_the_lane_of_its_first_call() {
    let w = world().await;
    let bot = 917;
    let g = Arc::new(Grammers::new(w.cfg.clone(), Arc::new(MemVault::default())));
    let id = new_file(&w, bot, 70_000, 4).await;
    let fid = FileId::decode(&id).unwrap();
    let lanes = lifecycle::lanes::Lanes::start("test-lane", 1).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (g1, fid1) = (g.clone(), fid.clone());
    lanes.spawn(async move {
        let got = match g1.download(&token(bot), &fid1, 0).await {
            Ok(s) => collect(s).await.map(|b| b.len()),
            Err(e) => Err(e),
        };
        let _ = tx.send(got.ok());
    });
    assert_eq!(rx.await.unwrap(), Some(70_000));
    lanes.stop(std::time::Duration::ZERO).await;
    let again = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        collect(g.download(&token(bot), &fid, 0).await?).await
    })
    .await
    .expect("answered, not stuck on a runtime that has ended")
    .unwrap();
    assert!(again == content(4, 70_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_small_and_big_become_files_both_faces_serve() {
    let w = world().await;
    let bot = 902;
    w.sb.world().lock().bot(bot);
    let g = Grammers::new(w.cfg.clone(), Arc::new(MemVault::default()));
    // Under 10 MiB: saveFilePart; over: saveBigFilePart from 4 workers.
    for (size, seed) in [(1_200_000usize, 1u64), (12 * 1024 * 1024 + 5, 2)] {
        let bytes = content(seed, size);
        let up = g
            .upload(
                &token(bot),
                stream_of(bytes.clone()),
                size as u64,
                "data.bin",
            )
            .await
            .unwrap();
        let stored = g
            .upload_media(
                &token(bot),
                up,
                NewMedia {
                    photo: false,
                    mime_type: "application/octet-stream".into(),
                    attributes: vec![tl::types::DocumentAttributeFilename {
                        file_name: "data.bin".into(),
                    }
                    .into()],
                    force_file: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(stored.file_size, size as u64);
        assert_eq!(stored.file_id.file_type, FileType::Document);
        // The Bot API face knows the file by the id MTProto's answer makes.
        let f: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/bot{}/getFile?file_id={}",
                w.http,
                sandbox::token_for(bot),
                stored.file_id.encode()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(f["ok"], true, "{f}");
        let path = f["result"]["file_path"].as_str().unwrap();
        let body = reqwest::get(format!(
            "{}/file/bot{}/{path}",
            w.http,
            sandbox::token_for(bot)
        ))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
        assert_eq!(Sha256::digest(&body), Sha256::digest(&bytes));
    }
    // A video keeps its type through its attributes; a photo is a photo.
    let up = g
        .upload(&token(bot), stream_of(content(3, 50_000)), 50_000, "v.mp4")
        .await
        .unwrap();
    let video = g
        .upload_media(
            &token(bot),
            up,
            NewMedia {
                photo: false,
                mime_type: "video/mp4".into(),
                attributes: vec![tl::types::DocumentAttributeVideo {
                    round_message: false,
                    supports_streaming: true,
                    nosound: false,
                    duration: 2.0,
                    w: 320,
                    h: 240,
                    preload_prefix_size: None,
                    video_start_ts: None,
                    video_codec: None,
                }
                .into()],
                force_file: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(video.file_id.file_type, FileType::Video);
    let up = g
        .upload(&token(bot), stream_of(content(4, 30_000)), 30_000, "p.jpg")
        .await
        .unwrap();
    let photo = g
        .upload_media(
            &token(bot),
            up,
            NewMedia {
                photo: true,
                mime_type: "image/jpeg".into(),
                attributes: Vec::new(),
                force_file: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(photo.file_id.file_type, FileType::Photo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_4000_part_cap_is_refused_before_sending() {
    let w = world().await;
    let g = Grammers::new(w.cfg.clone(), Arc::new(MemVault::default()));
    let never: UploadStream = Box::pin(futures_util::stream::pending());
    let err = g
        .upload(&token(903), never, 4000 * 512 * 1024 + 1, "huge.bin")
        .await
        .unwrap_err();
    assert!(matches!(err, MtprotoError::TooBig { .. }), "{err}");
    assert!(err.is_bad_request());
    assert_eq!(w.sb.world().lock().mtproto_sign_ins, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_media_and_reads_messages_back() {
    let w = world().await;
    let bot = 904;
    let g = Grammers::new(w.cfg.clone(), Arc::new(MemVault::default()));
    let id = new_file(&w, bot, 4096, 5).await;
    let fid = FileId::decode(&id).unwrap();
    let msg = g
        .send_media(&token(bot), 55, &fid, "a caption")
        .await
        .unwrap();
    let (got, _) = g.get_messages(&token(bot), 55, &[msg, 9999]).await.unwrap();
    assert_eq!(got.len(), 2);
    let tl::enums::Message::Message(m) = &got[0] else {
        panic!("not a message: {:?}", got[0]);
    };
    assert_eq!((m.id, m.message.as_str()), (msg, "a caption"));
    assert!(matches!(
        m.media,
        Some(tl::enums::MessageMedia::Document(_))
    ));
    assert!(matches!(got[1], tl::enums::Message::Empty(_)));
    // A message sent through the Bot API face is readable here too.
    let sent: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/bot{}/sendMessage",
            w.http,
            sandbox::token_for(bot)
        ))
        .json(&serde_json::json!({"chat_id": 66, "text": "from the Bot API"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mid = sent["result"]["message_id"].as_i64().unwrap() as i32;
    let (got, _) = g.get_messages(&token(bot), 66, &[mid]).await.unwrap();
    let tl::enums::Message::Message(m) = &got[0] else {
        panic!("not a message");
    };
    assert_eq!(m.message, "from the Bot API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_actions_and_full_info() {
    let w = world().await;
    let bot = 905;
    w.sb.world().lock().bot(bot);
    w.sb.world().lock().bot(906);
    w.sb.world().lock().users.insert(
        77,
        sandbox::world::SandboxUser {
            id: 77,
            username: Some("ann_user".into()),
            first_name: "Ann".into(),
            photos: 0,
        },
    );
    let g = Grammers::new(w.cfg.clone(), Arc::new(MemVault::default()));
    let t = token(bot);
    let ann = g.resolve_username(&t, "@ann_user").await.unwrap().unwrap();
    assert_eq!((ann.chat_id, ann.is_bot), (77, false));
    assert_eq!(ann.first_name.as_deref(), Some("Ann"));
    let other = g
        .resolve_username(&t, "sandbox906_bot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((other.chat_id, other.is_bot), (906, true));
    assert_eq!(g.resolve_username(&t, "nobody_here").await.unwrap(), None);

    g.chat_action(
        &t,
        77,
        tl::enums::SendMessageAction::SendMessageTypingAction,
    )
    .await
    .unwrap();
    let actions = w.sb.world().lock().chat_actions.clone();
    assert_eq!(actions.len(), 1);
    assert_eq!((actions[0].0, actions[0].1), (bot, 77));
    assert!(actions[0].2.contains("Typing"), "{:?}", actions[0]);

    let full = g.full_user(&t, 77).await.unwrap();
    let tl::enums::UserFull::Full(f) = &full.full_user;
    assert_eq!(f.id, 77);
    let chat = g.full_chat(&t, -42).await.unwrap();
    assert_eq!(chat.chats.len(), 1);
    assert_eq!(
        g.profile_photos(&t, 77, 0, 100).await.unwrap(),
        (0, Vec::new())
    );
    // A user with profile photos: all of them, a page of them, and each downloadable.
    let made: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/control/users", w.http))
        .json(&serde_json::json!({"id": 78, "username": "pic_user", "photos": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(made["ok"], true);
    let (count, photos) = g.profile_photos(&t, 78, 0, 100).await.unwrap();
    assert_eq!((count, photos.len()), (2, 2));
    let (count, page) = g.profile_photos(&t, 78, 1, 1).await.unwrap();
    assert_eq!((count, page.len()), (2, 1));
    let id = |p: &tl::enums::Photo| match p {
        tl::enums::Photo::Photo(p) => p.id,
        tl::enums::Photo::Empty(p) => p.id,
    };
    assert_eq!(id(&page[0]), id(&photos[1]));
    let tl::enums::Photo::Photo(p) = &photos[0] else {
        panic!("not a photo");
    };
    let fid = FileId::photo(p.dc_id, p.file_reference.clone(), p.id, p.access_hash, b'y');
    let mut stream = g.download(&t, &fid, 0).await.unwrap();
    let mut got = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        got += chunk.unwrap().len();
    }
    assert_eq!(got, 2048 + 1, "the newest photo, the second made");
    // A chat's photo history, through messages.search; and a public chat by its username.
    let made: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/control/chats", w.http))
        .json(
            &serde_json::json!({"id": -1_000_000_000_079i64, "type": "supergroup",
            "title": "Pics", "username": "pics_chat", "photos": 3}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(made["ok"], true);
    let (count, page) = g.chat_photos(&t, -1_000_000_000_079, 1, 10).await.unwrap();
    assert_eq!((count, page.len()), (3, 2));
    let chat = g.resolve_username(&t, "@pics_chat").await.unwrap().unwrap();
    assert_eq!(chat.chat_id, -1_000_000_000_079);
    assert_eq!(g.username(&t).await.unwrap(), "sandbox905_bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_session_is_reused_without_signing_in_again() {
    let w = world().await;
    let bot = 907;
    let vault = Arc::new(MemVault::default());
    let id = new_file(&w, bot, 1000, 6).await;
    let fid = FileId::decode(&id).unwrap();
    for _ in 0..2 {
        // A new backend each time, as after a restart; the vault is what persists.
        let g = Grammers::new(w.cfg.clone(), vault.clone());
        collect(g.download(&token(bot), &fid, 0).await.unwrap())
            .await
            .unwrap();
    }
    assert_eq!(w.sb.world().lock().mtproto_sign_ins, 1);
    assert!(vault.0.lock().unwrap().contains_key(&BotId(bot)));
}
