//! The behaviour every [`Store`] implementation must show. Each implementation's tests call
//! [`run_all`]; the ScyllaDB one runs it when `TELEPIPE_TEST_SCYLLA` names a node.

use crate::{CallQuery, CallRow, Outcome, Store};
use schemas::{BlobRef, BodyBytes, BotId, CallId, Origin, Response, Stages};
use serde_json::json;

pub fn ok_response() -> Response {
    Response {
        status: 200,
        content_type: Some("application/json".into()),
        body: BodyBytes::inline(br#"{"ok":true,"result":true}"#),
        origin: Origin::Upstream,
        stages: Stages {
            queue_ms: 1,
            upstream_ms: 2,
        },
    }
}

pub fn call_row(bot: i64, received_ms: i64, method: &str) -> CallRow {
    CallRow {
        call_id: CallId::at_ms(received_ms),
        bot_id: BotId(bot),
        received_ms,
        token_fingerprint: "00112233445566778899aabb".into(),
        method: method.into(),
        http_method: "POST".into(),
        test_env: false,
        params: json!({"chat_id": "42", "text": "hi"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        blobs: vec![BlobRef {
            sha256: "ab".repeat(32),
            size: 3,
            key: "sha256/ab/ab/x".into(),
        }],
        outcome: Outcome::Ok,
        http_status: Some(200),
        error_code: None,
        description: None,
        latency_ms: Some(12),
        stages: Stages {
            queue_ms: 1,
            upstream_ms: 10,
        },
        encoding: schemas::Encoding::Form,
        request: Some("c2VhbGVk".into()),
        answer_sha256: Some("cd".repeat(32)),
        answer: None,
    }
}

pub async fn run_all(store: &dyn Store) {
    audit_rows_roundtrip_and_filter(store).await;
    audit_rows_are_upserts(store).await;
    audit_rows_expire(store).await;
    bots_are_found_by_username(store).await;
    peers_are_kept_per_bot_until_they_expire(store).await;
    results_roundtrip_and_expire(store).await;
    outcomes_write_result_and_row(store).await;
    queued_outcomes_read_back(store).await;
    begin_tells_fresh_in_flight_and_done(store).await;
    files_by_unique_id_and_path(store).await;
    files_are_listed_least_served_first(store).await;
    sessions_roundtrip(store).await;
    uploads_are_cached_by_content_kind_and_name(store).await;
    webhooks_keep_their_offset_and_error(store).await;
    updates_are_kept_once_and_delivered_in_order(store).await;
    polling_bots_confirm_and_readers_follow(store).await;
    flood_settings_are_kept_per_bot(store).await;
}

async fn flood_settings_are_kept_per_bot(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    store
        .put_flood_settings(bot, r#"{"enabled":true}"#)
        .await
        .unwrap();
    store
        .put_flood_settings(bot, r#"{"enabled":false}"#)
        .await
        .unwrap();
    let all = store.flood_settings().await.unwrap();
    let mine: Vec<_> = all.iter().filter(|(b, _)| *b == bot).collect();
    assert_eq!(mine, [&(bot, r#"{"enabled":false}"#.to_owned())]);
}

/// A polling bot's updates: its offset confirms (they leave the pending ones but stay readable
/// from an update_id on), and each reader keeps where it stands.
async fn polling_bots_confirm_and_readers_follow(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    store.put_webhook(&webhook(bot, "")).await.unwrap();
    assert!(store.webhook(bot).await.unwrap().unwrap().polling());
    let rows: Vec<_> = (10..15)
        .map(|id| (bot, id, format!(r#"{{"update_id":{id}}}"#)))
        .collect();
    store.put_updates(&rows).await.unwrap();
    store.confirm_updates(bot, 12).await.unwrap();
    let pending: Vec<i64> = store
        .pending_updates(bot, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(pending, [12, 13, 14]);
    assert_eq!(store.pending_count(bot).await.unwrap(), 3);
    // A named reader reads confirmed ones too, with their bodies, from where it stands.
    let from = store.updates_from(bot, 11, 2).await.unwrap();
    assert_eq!(
        from,
        [
            (11, r#"{"update_id":11}"#.to_owned()),
            (12, r#"{"update_id":12}"#.to_owned())
        ]
    );
    assert!(store.readers(bot).await.unwrap().is_empty());
    for (name, next) in [("", 12), ("analytics", 11), ("analytics", 13)] {
        store
            .put_reader(
                bot,
                &crate::ReaderRow {
                    reader: name.into(),
                    next_update_id: next,
                    read_ms: 1700 + next,
                },
            )
            .await
            .unwrap();
    }
    let readers = store.readers(bot).await.unwrap();
    assert_eq!(readers.len(), 2);
    assert_eq!(readers[0].reader, "");
    assert_eq!(readers[0].next_update_id, 12);
    assert_eq!(readers[1].reader, "analytics");
    assert_eq!((readers[1].next_update_id, readers[1].read_ms), (13, 1713));
    // Confirming again is harmless; the purge keeps what was kept today.
    store.confirm_updates(bot, 12).await.unwrap();
    store.purge_updates(0).await.unwrap();
    assert_eq!(store.pending_count(bot).await.unwrap(), 3);
    store.delete_webhook(bot, true).await.unwrap();
}

fn webhook(bot_id: BotId, url: &str) -> crate::WebhookRow {
    crate::WebhookRow {
        bot_id,
        url: url.into(),
        secret_token: Some("s3cret".into()),
        max_connections: 40,
        allowed_updates: Some(r#"["message"]"#.into()),
        certificate: None,
        token_sealed: "sealed".into(),
        test_env: false,
        telegram_hook: false,
        poll_offset: 0,
        last_error_date: None,
        last_error_message: None,
    }
}

async fn webhooks_keep_their_offset_and_error(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    assert_eq!(store.webhook(bot).await.unwrap(), None);
    store.put_webhook(&webhook(bot, "http://a/")).await.unwrap();
    store.set_poll_offset(bot, 42).await.unwrap();
    store
        .set_webhook_error(bot, Some((1700, "Connection refused".into())))
        .await
        .unwrap();
    // Set again (another URL): the offset and the last error stay.
    store.put_webhook(&webhook(bot, "http://b/")).await.unwrap();
    let w = store.webhook(bot).await.unwrap().unwrap();
    assert_eq!(w.url, "http://b/");
    assert_eq!(w.poll_offset, 42);
    assert_eq!(w.last_error_date, Some(1700));
    assert_eq!(w.secret_token.as_deref(), Some("s3cret"));
    assert!(!w.telegram_hook);
    assert!(store
        .webhooks()
        .await
        .unwrap()
        .iter()
        .any(|w| w.bot_id == bot));
    // One process at a time does a bot's webhook work; another takes over when the lease ends.
    assert!(store.lease_webhook(bot, "a", 1000, 31_000).await.unwrap());
    assert!(!store.lease_webhook(bot, "b", 2000, 32_000).await.unwrap());
    assert!(
        store.lease_webhook(bot, "a", 20_000, 50_000).await.unwrap(),
        "renewed"
    );
    assert!(!store.lease_webhook(bot, "b", 40_000, 70_000).await.unwrap());
    assert!(
        store.lease_webhook(bot, "b", 50_001, 80_000).await.unwrap(),
        "expired: taken over"
    );
    assert!(!store.lease_webhook(bot, "a", 60_000, 90_000).await.unwrap());
    assert!(
        !store
            .lease_webhook(BotId(bot.0 + 1), "a", 0, 1)
            .await
            .unwrap(),
        "no webhook, no lease"
    );
    // Two tasks of one process (the poller and the deliverer) ask at once: the owner gets it
    // both times, whichever asks first.
    for n in 0..20 {
        let raced = BotId(bot.0 + 100 + n);
        store
            .put_webhook(&webhook(raced, "https://r.example/"))
            .await
            .unwrap();
        let (x, y) = futures_util::join!(
            store.lease_webhook(raced, "a", 1000, 61_000),
            store.lease_webhook(raced, "a", 1000, 61_000)
        );
        assert!(
            x.unwrap() && y.unwrap(),
            "the owner was refused its own lease"
        );
    }
    store.set_webhook_error(bot, None).await.unwrap();
    assert_eq!(
        store
            .webhook(bot)
            .await
            .unwrap()
            .unwrap()
            .last_error_message,
        None
    );
    store.delete_webhook(bot, false).await.unwrap();
    assert_eq!(store.webhook(bot).await.unwrap(), None);
}

async fn updates_are_kept_once_and_delivered_in_order(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    for id in [12, 10, 11] {
        assert!(store
            .put_update(bot, id, &format!("{{\"update_id\":{id}}}"))
            .await
            .unwrap());
    }
    assert!(
        !store.put_update(bot, 10, "{}").await.unwrap(),
        "a replay is not kept twice"
    );
    let ids = |v: Vec<(i64, String)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.pending_updates(bot, 10).await.unwrap()),
        [10, 11, 12]
    );
    assert_eq!(
        store.pending_updates(bot, 1).await.unwrap()[0].1,
        "{\"update_id\":10}"
    );
    store.delivered(bot, 10).await.unwrap();
    assert_eq!(ids(store.pending_updates(bot, 10).await.unwrap()), [11, 12]);
    assert_eq!(store.pending_count(bot).await.unwrap(), 2);
    assert!(
        !store.put_update(bot, 10, "{}").await.unwrap(),
        "delivered: not again"
    );
    // Remembered until purged a week on (ScyllaDB: a TTL, so its purge has nothing to do).
    store
        .purge_updates(schemas::now_ms() - 60_000)
        .await
        .unwrap();
    assert!(
        !store.put_update(bot, 10, "{}").await.unwrap(),
        "still remembered"
    );
    if store
        .purge_updates(schemas::now_ms() + 60_000)
        .await
        .unwrap()
        > 0
    {
        assert!(
            store.put_update(bot, 10, "{}").await.unwrap(),
            "purged: forgotten"
        );
        store.delivered(bot, 10).await.unwrap();
    }
    let more: Vec<_> = (13..16)
        .map(|id| (bot, id, format!("{{\"update_id\":{id}}}")))
        .collect();
    store.put_updates(&more).await.unwrap();
    store.put_updates(&more).await.unwrap();
    assert_eq!(
        ids(store.pending_updates(bot, 10).await.unwrap()),
        [11, 12, 13, 14, 15]
    );
    store.put_webhook(&webhook(bot, "http://c/")).await.unwrap();
    store.delete_webhook(bot, true).await.unwrap();
    assert_eq!(store.pending_count(bot).await.unwrap(), 0, "dropped");
    // A backlog longer than one batch goes whole.
    let backlog: Vec<_> = (100..550)
        .map(|id| (bot, id, format!("{{\"update_id\":{id}}}")))
        .collect();
    store.put_updates(&backlog).await.unwrap();
    store.put_webhook(&webhook(bot, "http://d/")).await.unwrap();
    store.delete_webhook(bot, true).await.unwrap();
    assert_eq!(
        store.pending_count(bot).await.unwrap(),
        0,
        "a long backlog dropped"
    );
    assert_eq!(store.webhook(bot).await.unwrap(), None);
}

async fn uploads_are_cached_by_content_kind_and_name(store: &dyn Store) {
    let key = crate::UploadKey {
        bot_id: BotId(rand::random::<u32>() as i64 + 1),
        sha256: "ef".repeat(32),
        kind: schemas::MediaKind::Document,
        file_name: "a.pdf".into(),
    };
    assert_eq!(store.cached_upload(&key).await.unwrap(), None);
    store.put_upload(&key, "BQACAgI-first").await.unwrap();
    assert_eq!(
        store.cached_upload(&key).await.unwrap().as_deref(),
        Some("BQACAgI-first")
    );
    for other in [
        crate::UploadKey {
            kind: schemas::MediaKind::Video,
            ..key.clone()
        },
        crate::UploadKey {
            file_name: "b.pdf".into(),
            ..key.clone()
        },
        crate::UploadKey {
            bot_id: BotId(key.bot_id.0 + 1),
            ..key.clone()
        },
    ] {
        assert_eq!(store.cached_upload(&other).await.unwrap(), None);
    }
    store.forget_upload(&key).await.unwrap();
    assert_eq!(store.cached_upload(&key).await.unwrap(), None);
}

pub fn file_row(bot: i64, unique: &str, path: &str) -> crate::FileRow {
    crate::FileRow {
        bot_id: BotId(bot),
        file_unique_id: unique.into(),
        file_id: format!("id-of-{unique}"),
        path: path.into(),
        blob: BlobRef {
            sha256: "cd".repeat(32),
            size: 1234,
            key: format!("sha256/cd/cd/{}", "cd".repeat(32)),
        },
        file_name: Some("report.pdf".into()),
        mime_type: Some("application/pdf".into()),
        stored_ms: 1_700_000_000_000,
    }
}

/// Files are found by (bot, unique id) and by path; another bot's unique id finds nothing.
async fn files_by_unique_id_and_path(store: &dyn Store) {
    let bot = rand::random::<u32>() as i64 + 1;
    let unique = format!("AgAD{bot}");
    let path = format!("bot{bot}_bot/{:032x}", rand::random::<u128>());
    let mut row = file_row(bot, &unique, &path);
    row.blob.key = format!("sha256/ab/ab/{bot}-first");
    store.put_file(&row).await.unwrap();
    assert_eq!(
        store.file_by_unique_id(BotId(bot), &unique).await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(store.file_by_path(&path).await.unwrap(), Some(row.clone()));
    assert_eq!(
        store
            .file_by_unique_id(BotId(bot + 1), &unique)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.file_by_path(&format!("{path}x")).await.unwrap(), None);
    // A newer file_id of the same file replaces the row.
    let newer = crate::FileRow {
        file_id: "newer".into(),
        ..row
    };
    store.put_file(&newer).await.unwrap();
    assert_eq!(
        store.file_by_path(&path).await.unwrap(),
        Some(newer.clone())
    );
    // The path stored again for another file: the file it named is gone with it, its bytes
    // no longer in use.
    let mut other = file_row(bot, &format!("{unique}b"), &path);
    other.blob.key = format!("sha256/aa/aa/{bot}-other");
    store.put_file(&other).await.unwrap();
    assert_eq!(
        store.file_by_path(&path).await.unwrap(),
        Some(other.clone())
    );
    assert_eq!(
        store.file_by_unique_id(BotId(bot), &unique).await.unwrap(),
        None
    );
    assert!(!store.blob_in_use(&newer.blob.key).await.unwrap());
    // Forgotten, the path names nothing; stored again, it names the file again.
    store
        .forget_file(BotId(bot), &other.file_unique_id)
        .await
        .unwrap();
    assert_eq!(store.file_by_path(&path).await.unwrap(), None);
    store.put_file(&other).await.unwrap();
    assert_eq!(store.file_by_path(&path).await.unwrap(), Some(other));
}

/// Eviction's view of files: usage per bot, least recently served first, a touch moves a file
/// back, a forgotten file is gone, and a blob is in use while any file keeps its bytes there.
async fn files_are_listed_least_served_first(store: &dyn Store) {
    let bot = rand::random::<u32>() as i64 + 10;
    let mut rows = Vec::new();
    for (i, stored) in [300, 100, 200].into_iter().enumerate() {
        let mut r = file_row(bot, &format!("U{bot}x{i}"), &format!("b{bot}_bot/f{i}"));
        r.stored_ms = stored;
        r.blob.key = format!("sha256/ee/ee/{bot}-{i}");
        store.put_file(&r).await.unwrap();
        rows.push(r);
    }
    let usage = store.file_usage().await.unwrap();
    assert!(usage.contains(&(BotId(bot), 3, 3 * 1234)));
    let order = |files: Vec<crate::StoredFile>| -> Vec<String> {
        files.into_iter().map(|f| f.row.file_unique_id).collect()
    };
    let mine = store
        .files_least_served(Some(BotId(bot)), 10)
        .await
        .unwrap();
    assert_eq!(mine[0].served_ms, 100);
    assert_eq!(
        order(mine),
        vec![
            format!("U{bot}x1"),
            format!("U{bot}x2"),
            format!("U{bot}x0")
        ]
    );
    store
        .touch_file(BotId(bot), &format!("U{bot}x1"), 400)
        .await
        .unwrap();
    let mine = store.files_least_served(Some(BotId(bot)), 2).await.unwrap();
    assert_eq!(order(mine), vec![format!("U{bot}x2"), format!("U{bot}x0")]);
    assert!(store.blob_in_use(&rows[2].blob.key).await.unwrap());
    store
        .forget_file(BotId(bot), &format!("U{bot}x2"))
        .await
        .unwrap();
    assert!(!store.blob_in_use(&rows[2].blob.key).await.unwrap());
    assert_eq!(
        store
            .file_by_unique_id(BotId(bot), &format!("U{bot}x2"))
            .await
            .unwrap(),
        None
    );
    let everyone = store.files_least_served(None, 100_000).await.unwrap();
    assert!(everyone
        .windows(2)
        .all(|w| w[0].served_ms <= w[1].served_ms));
}

async fn sessions_roundtrip(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    assert_eq!(store.session(bot).await.unwrap(), None);
    store.put_session(bot, "sealed-1").await.unwrap();
    store.put_session(bot, "sealed-2").await.unwrap();
    assert_eq!(
        store.session(bot).await.unwrap().as_deref(),
        Some("sealed-2")
    );
}

/// `begin` records the first attempt, sees a second as in flight, and a finished one as done.
async fn begin_tells_fresh_in_flight_and_done(store: &dyn Store) {
    let exp = schemas::now_ms() + 60_000;
    let id = CallId::new();
    assert!(!store.attempted(id).await.unwrap());
    assert_eq!(store.begin(id, exp).await.unwrap(), crate::Begin::Fresh);
    assert!(store.attempted(id).await.unwrap());
    assert_eq!(store.begin(id, exp).await.unwrap(), crate::Begin::InFlight);
    let marked = CallId::new();
    assert!(store.mark_attempt(marked, exp).await.unwrap());
    assert!(store.attempted(marked).await.unwrap());
    assert!(!store.attempted(CallId::new()).await.unwrap());
    store.put_result(id, &ok_response(), exp).await.unwrap();
    assert_eq!(
        store.begin(id, exp).await.unwrap(),
        crate::Begin::Done(ok_response())
    );
}

/// `record_outcome` leaves both the result and the audit row.
async fn outcomes_write_result_and_row(store: &dyn Store) {
    let row = call_row(3001, 5000, "sendMessage");
    store
        .record_outcome(&row, &ok_response(), schemas::now_ms() + 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.get_result(row.call_id).await.unwrap(),
        Some(ok_response())
    );
    let rows = store
        .calls(&CallQuery::bot(BotId(3001), 0, i64::MAX, 10))
        .await
        .unwrap();
    // Read back with its answer: the kept result's body.
    let mut row = row;
    row.answer = Some(r#"{"ok":true,"result":true}"#.into());
    assert_eq!(rows, vec![row]);
}

/// An outcome queued without waiting (embedded mode) reads back as one recorded and waited
/// for: its row with its answer, its result by call id, until it expires.
async fn queued_outcomes_read_back(store: &dyn Store) {
    let now = schemas::now_ms();
    let bot = rand::random::<u32>() as i64 + 1;
    let live = call_row(bot, 5000, "sendMessage");
    let dead = call_row(bot, 5001, "getMe");
    store
        .queue_outcome(live.clone(), ok_response(), now + 60_000)
        .await
        .unwrap();
    store
        .queue_outcome(dead.clone(), ok_response(), now - 1)
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(
        store.get_result(live.call_id).await.unwrap(),
        Some(ok_response())
    );
    assert_eq!(store.get_result(dead.call_id).await.unwrap(), None);
    let rows = store
        .calls(&CallQuery::bot(BotId(bot), 0, i64::MAX, 10))
        .await
        .unwrap();
    let mut answered = live;
    answered.answer = Some(r#"{"ok":true,"result":true}"#.into());
    assert_eq!(rows, vec![answered, dead]);
}

/// Rows come back as written, per bot, inside the window, oldest first, at most `limit`.
async fn audit_rows_roundtrip_and_filter(store: &dyn Store) {
    let day = 86_400_000;
    let a1 = call_row(1001, 5 * day + 10, "sendMessage");
    let a2 = call_row(1001, 6 * day + 10, "getMe");
    let mut a3 = call_row(1001, 6 * day + 20, "sendDocument");
    a3.outcome = Outcome::Error;
    a3.http_status = Some(400);
    a3.error_code = Some(400);
    a3.description = Some("Bad Request: chat not found".into());
    let b1 = call_row(1002, 6 * day + 15, "getMe");
    for r in [&a3, &b1, &a2, &a1] {
        store.record_call(r).await.unwrap();
    }
    let q = |from, to, limit| CallQuery::bot(BotId(1001), from, to, limit);
    let all = store.calls(&q(0, 7 * day, 100)).await.unwrap();
    assert_eq!(all, vec![a1.clone(), a2.clone(), a3.clone()]);
    let window = store.calls(&q(6 * day, 6 * day + 15, 100)).await.unwrap();
    assert_eq!(window, vec![a2.clone()]);
    let limited = store.calls(&q(0, 7 * day, 2)).await.unwrap();
    assert_eq!(limited.len(), 2);

    // Every bot's calls, in arrival order; filters; pages after a cursor.
    let every = CallQuery {
        from_ms: 0,
        to_ms: 7 * day,
        ..CallQuery::default()
    };
    let rows = store.calls(&every).await.unwrap();
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| [1001, 1002].contains(&r.bot_id.0))
        .cloned()
        .collect();
    assert_eq!(ours, vec![a1.clone(), a2.clone(), b1.clone(), a3.clone()]);
    let get_me = CallQuery {
        method: Some("GETME".into()),
        ..every.clone()
    };
    let rows = store.calls(&get_me).await.unwrap();
    assert!(rows.contains(&a2) && rows.contains(&b1));
    assert!(rows.iter().all(|r| r.method == "getMe"));
    let failed = CallQuery {
        http_status: Some(400),
        error_code: Some(400),
        ..every.clone()
    };
    let rows = store.calls(&failed).await.unwrap();
    assert!(rows.contains(&a3) && !rows.contains(&a1));
    let page1 = store
        .calls(&CallQuery {
            bot_id: Some(BotId(1001)),
            limit: 1,
            ..every.clone()
        })
        .await
        .unwrap();
    assert_eq!(page1, vec![a1.clone()]);
    let page2 = store
        .calls(&CallQuery {
            bot_id: Some(BotId(1001)),
            after: Some(a1.call_id),
            limit: 5,
            ..every.clone()
        })
        .await
        .unwrap();
    assert_eq!(page2, vec![a2.clone(), a3.clone()]);
    // Light rows: what counting needs, without parameters, blobs, request or answer.
    let light = store
        .calls(&CallQuery {
            bot_id: Some(BotId(1001)),
            light: true,
            ..every.clone()
        })
        .await
        .unwrap();
    assert_eq!(light.len(), 3);
    assert_eq!(
        (
            light[2].method.as_str(),
            light[2].http_status,
            light[2].latency_ms
        ),
        ("sendDocument", Some(400), Some(12))
    );
    assert!(light[0].params.is_empty() && light[0].blobs.is_empty());
    assert!(light[0].request.is_none() && light[0].answer.is_none());
}

/// Retention: audit rows of calls before the cut are forgotten, to the millisecond; later
/// ones stay.
async fn audit_rows_expire(store: &dyn Store) {
    let day = 86_400_000;
    let old = call_row(4001, 20 * day + 5, "sendMessage");
    let earlier_that_day = call_row(4001, 22 * day + 1, "sendMessage");
    let new = call_row(4001, 22 * day + 5, "sendMessage");
    for r in [&old, &earlier_that_day, &new] {
        store.record_call(r).await.unwrap();
    }
    // The cut is to the millisecond, inside a day as across days.
    let cut = 22 * day + 3;
    assert!(store.count_calls_before(cut).await.unwrap() >= 2);
    store.purge_calls(cut).await.unwrap();
    let rows = store
        .calls(&CallQuery::bot(BotId(4001), 0, i64::MAX, 10))
        .await
        .unwrap();
    assert_eq!(rows, vec![new]);
    assert_eq!(store.count_calls_before(cut).await.unwrap(), 0);
}

/// Writing a row twice (a redelivered call) leaves one row, the latest.
async fn audit_rows_are_upserts(store: &dyn Store) {
    let mut r = call_row(2001, 1000, "sendMessage");
    r.outcome = Outcome::Rejected;
    store.record_call(&r).await.unwrap();
    r.outcome = Outcome::Ok;
    store.record_call(&r).await.unwrap();
    let rows = store
        .calls(&CallQuery::bot(BotId(2001), 0, i64::MAX, 10))
        .await
        .unwrap();
    assert_eq!(rows, vec![r]);
}

/// Results are found by call id until they expire, then purged.
async fn results_roundtrip_and_expire(store: &dyn Store) {
    let now = schemas::now_ms();
    let (live, dead) = (CallId::new(), CallId::new());
    store
        .put_result(live, &ok_response(), now + 60_000)
        .await
        .unwrap();
    store
        .put_result(dead, &ok_response(), now - 1)
        .await
        .unwrap();
    assert_eq!(store.get_result(live).await.unwrap(), Some(ok_response()));
    assert_eq!(store.get_result(dead).await.unwrap(), None);
    assert_eq!(store.get_result(CallId::new()).await.unwrap(), None);
    // How many rows a purge reports is the implementation's business (ScyllaDB expires by TTL
    // and reports none); the outcomes of calls after the cut survive it.
    assert!(store.mark_attempt(live, now + 60_000).await.unwrap());
    store.purge_results(now - 60_000).await.unwrap();
    assert_eq!(store.get_result(live).await.unwrap(), Some(ok_response()));
    assert!(!store.mark_attempt(live, now + 60_000).await.unwrap());
    if store.purge_results(now + 60_000).await.unwrap() > 0 {
        assert_eq!(store.get_result(live).await.unwrap(), None, "purged");
        assert!(
            !store.mark_attempt(live, now + 60_000).await.unwrap(),
            "its attempt outlives it (purged on its own cut)"
        );
        assert!(store.purge_attempts(now + 60_000).await.unwrap() > 0);
        assert!(store.mark_attempt(live, now + 60_000).await.unwrap());
    }
}

/// A username finds its bot in any case; a username that moved finds its new bot.
async fn bots_are_found_by_username(store: &dyn Store) {
    assert_eq!(store.bot_by_username("nobody_bot").await.unwrap(), None);
    store
        .put_bot_username(BotId(5001), "Echo_Bot")
        .await
        .unwrap();
    assert_eq!(
        store.bot_by_username("echo_bot").await.unwrap(),
        Some(BotId(5001))
    );
    store
        .put_bot_username(BotId(5002), "Echo_Bot")
        .await
        .unwrap();
    assert_eq!(
        store.bot_by_username("ECHO_BOT").await.unwrap(),
        Some(BotId(5002))
    );
}

async fn peers_are_kept_per_bot_until_they_expire(store: &dyn Store) {
    let bot = BotId(rand::random::<u32>() as i64 + 1);
    let later = schemas::now_ms() + 60_000;
    assert_eq!(store.peer(bot, "alice").await.unwrap(), None);
    store.put_peer(bot, "Alice", 42, later).await.unwrap();
    assert_eq!(store.peer(bot, "ALICE").await.unwrap(), Some(42));
    assert_eq!(
        store.peer(BotId(bot.0 + 1), "alice").await.unwrap(),
        None,
        "another bot resolves for itself"
    );
    store.put_peer(bot, "alice", 43, later).await.unwrap();
    assert_eq!(store.peer(bot, "alice").await.unwrap(), Some(43));
    // An entry past its expiry is not used.
    store
        .put_peer(bot, "bob", 7, schemas::now_ms() - 1)
        .await
        .unwrap();
    assert_eq!(store.peer(bot, "bob").await.unwrap(), None);
}
