//! The processors over the in-process bus, the SQLite store and an in-process sandbox:
//! answers reach the reply topic, outcomes are recorded, and a redelivered call is answered
//! from its recorded outcome without going upstream again (invariant 3).

use bus::memory::MemoryBus;
use bus::reply::Correlator;
use bus::Bus;
use processors::{Deps, LocalReplies, ProcessorConfig, Stage};
use schemas::*;
use std::sync::Arc;
use std::time::Duration;
use store::blobs::LocalBlobs;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{CallStore, OutcomeStore, WebhookStore};
use telegram::botapi::BotApi;
use tokio_util::sync::CancellationToken;

struct World {
    bus: Arc<MemoryBus>,
    store: Arc<SqliteStore>,
    sealer: Sealer,
    sandbox_url: String,
    shutdown: CancellationToken,
    /// The waiting calls of an ingest in the same process, reading `responses.local`.
    local: Arc<Correlator>,
    deps: Deps,
    /// How the stages run (`ProcessorConfig::default()`, or as `serve` runs them).
    config: ProcessorConfig,
    /// What ends waiting long polls (the gateway's stop).
    polls_stop: CancellationToken,
    /// The sandbox's files and the blobs: removed with the world.
    dir: std::path::PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl World {
    fn start(&self, stage: Stage) {
        tokio::spawn(processors::run(
            stage,
            self.config.clone(),
            self.deps.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// Every stage running.
async fn world() -> World {
    let w = idle_world().await;
    for stage in Stage::ALL {
        w.start(stage);
    }
    w
}

/// No stage running yet: the test starts them.
async fn idle_world() -> World {
    idle_world_with(None).await
}

/// As [`idle_world`]; given `options`, as `serve` runs: the store in a file of the world's
/// folder with those options (a second connection can hold its write lock), the stages told
/// that the bus dies with the process.
async fn idle_world_with(options: Option<SqliteOptions>) -> World {
    let dir = std::env::temp_dir().join(format!("tp-proc-{}", CallId::new()));
    let sb = sandbox::Sandbox::new(sandbox::SandboxConfig::new(dir.join("sandbox"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(sandbox::serve(sb, listener, shutdown.clone()));
    let bus = Arc::new(MemoryBus::new(4));
    let (store, config) = match options {
        None => (
            SqliteStore::in_memory().unwrap(),
            ProcessorConfig::default(),
        ),
        Some(options) => {
            std::fs::create_dir_all(&dir).unwrap();
            let store = SqliteStore::open_with(&dir.join("store.db"), options).unwrap();
            let config = ProcessorConfig {
                durable_bus: false,
                ..ProcessorConfig::default()
            };
            (store, config)
        }
    };
    let store = Arc::new(store);
    let polls_stop = CancellationToken::new();
    let sealer = Sealer::new(&SealKey::generate());
    let local = Correlator::new();
    let deps = Deps {
        bus: bus.clone(),
        store: store.clone(),
        blobs: Arc::new(LocalBlobs::open(&dir.join("blobs")).unwrap()),
        upstream: BotApi::new(&sandbox_url, Duration::from_secs(5)).unwrap(),
        sealer: sealer.clone(),
        files: Default::default(),
        public_url: None,
        local_replies: Some(LocalReplies {
            topic: "responses.local".into(),
            correlator: local.clone(),
        }),
        webhook_destinations: Arc::new(fetch::Destinations::all()),
        polls_stop: Some(polls_stop.clone()),
        actions: Default::default(),
        flood: None,
        polls: Default::default(),
    };
    World {
        bus,
        store,
        sealer,
        sandbox_url,
        shutdown,
        local,
        deps,
        config,
        polls_stop,
        dir: dir.clone(),
    }
}

fn call(w: &World, bot: i64, method: &str, query: &str) -> Call {
    let token = BotToken::parse(&sandbox::token_for(bot)).unwrap();
    Call {
        token: Some(w.sealer.seal(&token)),
        token_fingerprint: w.sealer.fingerprint(token.expose()),
        test_env: false,
        method: method.into(),
        http_method: "GET".into(),
        query: query.into(),
        body: CallBody::Empty,
        deadline_ms: now_ms() + 30_000,
        rejected: None,
        staged: None,
    }
}

/// A call of `bot` as ingest would publish it, answered on `responses.t`.
fn envelope(w: &World, bot: i64, method: &str, query: &str) -> Envelope<Call> {
    Envelope::new(
        CallId::new(),
        BotId(bot),
        "ingest/t",
        Some("responses.t".into()),
        call(w, bot, method, query),
    )
}

async fn next_reply(c: &mut Box<dyn bus::Consumer>) -> Envelope<Response> {
    let r = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a reply within 10 s")
        .unwrap();
    bus::decode_or_skip(&r).expect("a readable reply")
}

/// Waits until the run that answered `id` is over (its outcome kept, its claim on the call
/// let go): a copy delivered before then is left to that run, as it still runs.
async fn finished(w: &World, id: CallId) {
    for _ in 0..500 {
        if w.store.get_result(id).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no outcome kept for {id}");
}

async fn sandbox_calls(w: &World, bot: i64) -> usize {
    let v: serde_json::Value =
        reqwest::get(format!("{}/control/calls?bot_id={bot}", w.sandbox_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    v.as_array().unwrap().len()
}

/// A long poll that has its answer when the gateway stops keeps it in the record: its row,
/// waiting for room in the store's queue as the stop comes, is written as answered, not
/// dropped for the stop's empty answer (the bot was given the update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answered_as_the_gateway_stops_is_recorded_as_answered() {
    const BOT: i64 = 58;
    // One queued row at a time: with the writer held, the next one waits for room.
    let options = SqliteOptions {
        queue_bytes: 1,
        ..SqliteOptions::default()
    };
    let w = idle_world_with(Some(options)).await;
    for stage in Stage::ALL {
        w.start(stage);
    }
    let update = r#"{"update_id":1,"message":{"message_id":1,"date":1,"chat":{"id":1,"type":"private"},"text":"kept"}}"#;
    w.store.put_update(BotId(BOT), 1, update).await.unwrap();
    let ask = |method: &str, query: &str| {
        let mut env = envelope(&w, BOT, method, query);
        env.header.reply_to = Some("responses.local".into());
        let waiter = w.local.register(env.header.call_id);
        (env, waiter)
    };
    let answered = |waiter: bus::reply::Waiter| async move {
        let answer = waiter
            .wait(Duration::from_secs(10))
            .await
            .expect("answered");
        let body = answer.payload.body.inline_bytes().unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    // A first poll: the bot polled for, its reader's place kept, so the next poll only reads.
    let (poll, waiter) = ask("getUpdates", "timeout=20");
    bus::publish_envelope(w.bus.as_ref(), "calls", &poll)
        .await
        .unwrap();
    let given = answered(waiter).await;
    assert_eq!(given["result"][0]["message"]["text"], "kept", "{given}");
    finished(&w, poll.header.call_id).await;
    // Another connection holds the write lock: the writer cannot commit (for up to its busy
    // timeout of 5 s), and the next call's row fills the queue (a call that writes nothing
    // else: getMe's answer would have the bot's username written).
    let blocker = rusqlite::Connection::open(w.dir.join("store.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (first, waiter) = ask("sendMessage", "chat_id=1&text=first");
    bus::publish_envelope(w.bus.as_ref(), "calls", &first)
        .await
        .unwrap();
    assert_eq!(answered(waiter).await["ok"], true);
    // The update is not confirmed: the next poll is given it again, at once.
    let (poll, waiter) = ask("getUpdates", "timeout=20");
    bus::publish_envelope(w.bus.as_ref(), "calls", &poll)
        .await
        .unwrap();
    assert_eq!(answered(waiter).await, given);
    // The poll's row waits for room; the gateway stops meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.polls_stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.execute_batch("COMMIT").unwrap();
    let kept = eventually(|| async { w.store.get_result(poll.header.call_id).await.unwrap() })
        .await
        .expect("the poll's outcome recorded");
    let recorded: serde_json::Value =
        serde_json::from_slice(&kept.body.inline_bytes().unwrap()).unwrap();
    assert_eq!(recorded, given, "the record holds what the bot was given");
    let rows = w
        .store
        .calls(&store::CallQuery::bot(BotId(BOT), 0, i64::MAX, 10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "one row for each call");
}

/// A refused long poll (ingest answered it) stays audited as refused when the gateway stops
/// while its row is written: the stop records no empty answer in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_long_poll_stopped_while_audited_stays_refused() {
    const BOT: i64 = 59;
    let w = idle_world_with(Some(SqliteOptions::default())).await;
    for stage in Stage::ALL {
        w.start(stage);
    }
    // The audit row's write waits behind another connection's write lock.
    let blocker = rusqlite::Connection::open(w.dir.join("store.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut c = call(&w, BOT, "getUpdates", "timeout=20");
    c.rejected = Some(ApiError::bad_request("can't parse JSON object"));
    let env = Envelope::new(CallId::new(), BotId(BOT), "ingest/t", None, c);
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.polls_stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.execute_batch("COMMIT").unwrap();
    // Whatever the stop queued is queued by now: written once the writer's queue is.
    tokio::time::timeout(Duration::from_secs(20), w.store.flush())
        .await
        .expect("the writer's queue written")
        .unwrap();
    let q = store::CallQuery::bot(BotId(BOT), 0, i64::MAX, 10);
    let rows = eventually(|| async {
        let rows = w.store.calls(&q).await.unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("the refused poll audited");
    let seen: Vec<_> = rows.iter().map(|r| (r.outcome, r.error_code)).collect();
    assert_eq!(seen, [(store::Outcome::Rejected, Some(400))]);
    // No answer kept for it either (the stop's empty one was, before).
    let kept = w.store.get_result(env.header.call_id).await.unwrap();
    assert!(kept.is_none(), "{kept:?}");
}

/// Polls `f` for up to 10 s.
async fn eventually<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1000 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The same call delivered twice (a crash between outcome and commit) goes upstream once; the
/// second delivery is answered from the store with the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_call_is_not_executed_twice() {
    let w = world().await;
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let env = envelope(&w, 55, "sendMessage", "chat_id=1&text=once");
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let first = next_reply(&mut replies).await;
    assert_eq!(first.payload.status, 200);
    assert_eq!(first.payload.origin, Origin::Upstream);
    finished(&w, env.header.call_id).await;

    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let second = next_reply(&mut replies).await;
    assert_eq!(second.header.call_id, env.header.call_id);
    assert_eq!(second.payload.origin, Origin::Stored);
    assert_eq!(second.payload.body, first.payload.body);
    assert_eq!(sandbox_calls(&w, 55).await, 1, "upstream saw the call once");

    let rows = w
        .store
        .calls(&store::CallQuery::bot(BotId(55), 0, i64::MAX, 10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, store::Outcome::Ok);
    assert_eq!(rows[0].params["text"], "once");
    w.shutdown.cancel();
}

/// A rejected call is only audited; a record this build cannot read is skipped, not fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_unreadable_records_do_not_go_upstream() {
    let w = world().await;
    let mut c = call(&w, 56, "sendMessage", "chat_id=1&text=no");
    c.rejected = Some(ApiError::bad_request("can't parse JSON object"));
    let env = Envelope::new(CallId::new(), BotId(56), "ingest/t", None, c);
    w.bus
        .publish("calls", "56", b"{\"header\":{\"schema\":99}}".to_vec())
        .await
        .unwrap();
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let q = store::CallQuery::bot(BotId(56), 0, i64::MAX, 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = w.store.calls(&q).await.unwrap();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, store::Outcome::Rejected);
    assert_eq!(rows[0].error_code, Some(400));
    assert_eq!(sandbox_calls(&w, 56).await, 0);
    // Both records get committed: nothing left for the group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let depth = w.bus.depth();
        let left = depth
            .iter()
            .find(|d| d.topic == "calls")
            .map_or(0, |d| d.records);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never committed: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.shutdown.cancel();
}

/// A call whose attempt is recorded but whose outcome is not (its processor died mid-call) is
/// not sent again: a send gets a shaped 409 saying the outcome is unknown; a read runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_in_a_dead_processor_is_not_sent_twice() {
    let w = world().await;
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let send = envelope(&w, 57, "sendMessage", "chat_id=1&text=maybe");
    let read = envelope(&w, 57, "getMe", "");
    // What a processor does right before it forwards a call.
    for env in [&send, &read] {
        assert!(w
            .store
            .mark_attempt(env.header.call_id, i64::MAX)
            .await
            .unwrap());
    }
    bus::publish_envelope(w.bus.as_ref(), "calls", &send)
        .await
        .unwrap();
    let r = next_reply(&mut replies).await;
    assert_eq!(r.header.call_id, send.header.call_id);
    assert_eq!(r.payload.status, 409);
    assert!(r
        .payload
        .description()
        .unwrap()
        .starts_with("Conflict: the gateway restarted"));

    bus::publish_envelope(w.bus.as_ref(), "calls", &read)
        .await
        .unwrap();
    let r = next_reply(&mut replies).await;
    assert_eq!(r.header.call_id, read.header.call_id);
    assert_eq!(r.payload.status, 200);

    let v: serde_json::Value = reqwest::get(format!("{}/control/calls?bot_id=57", w.sandbox_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let methods: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["getMe"], "the send never reached upstream");
    w.shutdown.cancel();
}

/// An answer for an ingest in this process goes straight to its waiting call, not through the
/// bus; answers for calls it does not hold, and for any other ingest (`responses.t` in the
/// other tests), still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_for_an_ingest_in_this_process_skip_the_bus() {
    let w = world().await;
    let mut on_bus = w
        .bus
        .subscribe("test", &["responses.local".to_owned()])
        .await
        .unwrap();
    let mut env = envelope(&w, 57, "sendMessage", "chat_id=1&text=local");
    env.header.reply_to = Some("responses.local".into());
    let waiter = w.local.register(env.header.call_id);
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let answer = waiter
        .wait(Duration::from_secs(10))
        .await
        .expect("answered directly");
    assert_eq!(answer.header.call_id, env.header.call_id);
    assert_eq!(answer.payload.status, 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_bus.next())
            .await
            .is_err(),
        "the answer was published too"
    );
    assert_eq!(sandbox_calls(&w, 57).await, 1);
    // A call that this process's ingest does not hold (another process with the same instance
    // name took it): its answer takes the topic, as without the shortcut.
    let mut other = envelope(&w, 57, "sendMessage", "chat_id=1&text=elsewhere");
    other.header.reply_to = Some("responses.local".into());
    bus::publish_envelope(w.bus.as_ref(), "calls", &other)
        .await
        .unwrap();
    let published = next_reply(&mut on_bus).await;
    assert_eq!(published.header.call_id, other.header.call_id);
}

/// A call that needs file work leaves the router for the files stage (its record on
/// `calls.files`, nothing executed until the files stage runs), and a second delivery to the
/// router (a crash before its commit) is handed over again but not executed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_work_goes_to_the_files_stage_once() {
    let w = idle_world().await;
    w.start(Stage::Router);
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let mut handed = w
        .bus
        .subscribe("peek", &[bus::topics::CALLS_FILES.to_owned()])
        .await
        .unwrap();
    // An id of the right shape that upstream does not know: upstream's 400.
    let unknown = telegram::file_id::FileId::common(
        telegram::file_id::FileType::Document,
        2,
        vec![1],
        4_242_424_242,
        1,
    )
    .encode();
    let env = envelope(&w, 58, "getFile", &format!("file_id={unknown}"));
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let record = tokio::time::timeout(Duration::from_secs(10), handed.next())
        .await
        .expect("handed over within 10 s")
        .unwrap();
    let on_files: Envelope<Call> = bus::decode_or_skip(&record).unwrap();
    assert_eq!(on_files.header.call_id, env.header.call_id);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), replies.next())
            .await
            .is_err(),
        "the router does not answer file work itself"
    );
    assert_eq!(sandbox_calls(&w, 58).await, 0);

    w.start(Stage::Files);
    let first = next_reply(&mut replies).await;
    assert_eq!(first.header.call_id, env.header.call_id);
    assert_eq!(first.payload.status, 400, "{:?}", first.payload);
    assert_eq!(first.payload.origin, Origin::Upstream);
    finished(&w, env.header.call_id).await;
    // The download asks upstream for the bot's username, then its getFile.
    let executed = sandbox_calls(&w, 58).await;
    assert!(executed >= 1);

    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let second = next_reply(&mut replies).await;
    assert_eq!(second.header.call_id, env.header.call_id);
    assert_eq!(second.payload.origin, Origin::Stored);
    assert_eq!(
        sandbox_calls(&w, 58).await,
        executed,
        "upstream saw the call once"
    );
    w.shutdown.cancel();
}

/// A copy of a call delivered while the first still runs (a rebalance, a hand-over repeated)
/// is left to the first: upstream sees the call once, and no 409 answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_running_call_is_left_to_the_first() {
    let w = world().await;
    reqwest::Client::new()
        .post(format!("{}/control/faults", w.sandbox_url))
        .json(&serde_json::json!({"method": "sendMessage", "times": 1,
            "action": {"kind": "delay", "ms": 500}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let env = envelope(&w, 59, "sendMessage", "chat_id=1&text=twice");
    for _ in 0..2 {
        bus::publish_envelope(w.bus.as_ref(), "calls", &env)
            .await
            .unwrap();
    }
    let first = next_reply(&mut replies).await;
    assert_eq!(first.payload.status, 200, "{:?}", first.payload);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), replies.next())
            .await
            .is_err(),
        "the copy does not answer"
    );
    assert_eq!(sandbox_calls(&w, 59).await, 1);
    w.shutdown.cancel();
}

/// A file call whose attempt is recorded (its files stage reached upstream, then stopped) is
/// answered at once when delivered again: its URL is not fetched again, nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_call_that_reached_upstream_is_not_worked_on_again() {
    let w = world().await;
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    // A URL the fetcher refuses (a private address): worked on, the call would say so.
    let env = envelope(
        &w,
        61,
        "sendDocument",
        "chat_id=1&document=http://127.0.0.1:9/never",
    );
    assert!(w
        .store
        .mark_attempt(env.header.call_id, now_ms() + 60_000)
        .await
        .unwrap());
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();
    let reply = next_reply(&mut replies).await;
    assert_eq!(reply.payload.status, 409, "{:?}", reply.payload);
    assert_eq!(sandbox_calls(&w, 61).await, 0);
    w.shutdown.cancel();
}

/// A send of a file crosses three stages, each its own group: the files stage keeps the file
/// and publishes the call on `calls.media` with a reference to it (no bytes, no token in
/// clear), the media stage adds what it read and publishes on `calls.send`, and the send stage
/// sends it once. Nothing is answered or sent upstream before the send stage runs, and the
/// send stage's input delivered again (a crash before its commit) is answered from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_send_crosses_files_media_and_send_once() {
    let w = idle_world().await;
    w.start(Stage::Router);
    w.start(Stage::Files);
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let mut to_media = w
        .bus
        .subscribe("peek-media", &[bus::topics::CALLS_MEDIA.to_owned()])
        .await
        .unwrap();
    let mut to_send = w
        .bus
        .subscribe("peek-send", &[bus::topics::CALLS_SEND.to_owned()])
        .await
        .unwrap();
    let blob = w
        .deps
        .blobs
        .put_bytes(
            bytes::Bytes::from_static(b"%PDF-1.4 not much of a pdf"),
            1 << 20,
        )
        .await
        .unwrap();
    let token = sandbox::token_for(61);
    let mut env = envelope(&w, 61, "sendDocument", "");
    env.payload.http_method = "POST".into();
    let mark = w.sealer.token_mark(env.header.call_id);
    env.payload.body = CallBody::Multipart {
        parts: vec![
            Part::Text {
                name: "chat_id".into(),
                value: "61001".into(),
            },
            Part::Text {
                name: "file_name".into(),
                value: "report.pdf".into(),
            },
            // The bot quoting its own token: the ingest marked it (schemas::mask).
            Part::Text {
                name: "caption".into(),
                value: format!("mine: {mark}"),
            },
            Part::File {
                name: "document".into(),
                file_name: Some("upload.bin".into()),
                content_type: None,
                blob: blob.clone(),
            },
        ],
    };
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();

    let record = tokio::time::timeout(Duration::from_secs(10), to_media.next())
        .await
        .expect("on calls.media within 10 s")
        .unwrap();
    let secret = token.split_once(':').unwrap().1;
    let found: Envelope<Call> = bus::decode_or_skip(&record).unwrap();
    let text = serde_json::to_string(&found).unwrap();
    assert!(!text.contains(secret), "no token in clear on the bus");
    assert!(text.contains(&mark), "marked again as the ingest marked it");
    assert_eq!(found.header.call_id, env.header.call_id);
    let staged = found
        .payload
        .staged
        .clone()
        .expect("what the files stage found");
    let file = staged.file.expect("the file, by reference");
    assert_eq!(file.blob, blob);
    assert!(staged.meta.is_none(), "not read yet");

    w.start(Stage::Media);
    let record = tokio::time::timeout(Duration::from_secs(10), to_send.next())
        .await
        .expect("on calls.send within 10 s")
        .unwrap();
    let read: Envelope<Call> = bus::decode_or_skip(&record).unwrap();
    let staged = read
        .payload
        .staged
        .clone()
        .expect("what the media stage read");
    assert_eq!(staged.meta.expect("metadata").size, blob.size);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.next())
            .await
            .is_err(),
        "nothing is answered before the send stage"
    );
    assert_eq!(
        sandbox_calls(&w, 61).await,
        0,
        "nothing sent before the send stage"
    );

    w.start(Stage::Send);
    let answer = next_reply(&mut replies).await;
    assert_eq!(answer.header.call_id, env.header.call_id);
    assert_eq!(answer.payload.status, 200, "{:?}", answer.payload);
    finished(&w, env.header.call_id).await;
    assert_eq!(sandbox_calls(&w, 61).await, 1);
    let sent: serde_json::Value = reqwest::get(format!(
        "{}/control/calls?bot_id=61&method=sendDocument",
        w.sandbox_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        sent[0]["params"]["caption"],
        format!("mine: {secret}"),
        "the bot's text as it sent it"
    );

    bus::publish_envelope(w.bus.as_ref(), bus::topics::CALLS_SEND, &read)
        .await
        .unwrap();
    let again = next_reply(&mut replies).await;
    assert_eq!(again.header.call_id, env.header.call_id);
    assert_eq!(again.payload.origin, Origin::Stored);
    assert_eq!(sandbox_calls(&w, 61).await, 1, "sent once");
    w.shutdown.cancel();
}

/// A media group crosses the same stages: each item's file found once in the files stage and
/// read in the media stage, the group sent once by the send stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_group_crosses_the_file_stages_with_each_item() {
    let w = world().await;
    let mut replies = w
        .bus
        .subscribe("test", &["responses.t".to_owned()])
        .await
        .unwrap();
    let mut to_send = w
        .bus
        .subscribe("peek-send", &[bus::topics::CALLS_SEND.to_owned()])
        .await
        .unwrap();
    let mut parts = vec![Part::Text {
        name: "chat_id".into(),
        value: "62001".into(),
    }];
    let mut media = Vec::new();
    for (i, body) in [&b"first document"[..], &b"second document"[..]]
        .into_iter()
        .enumerate()
    {
        let blob = w
            .deps
            .blobs
            .put_bytes(bytes::Bytes::copy_from_slice(body), 1 << 20)
            .await
            .unwrap();
        parts.push(Part::File {
            name: format!("f{i}"),
            file_name: Some(format!("f{i}.txt")),
            content_type: None,
            blob,
        });
        media.push(serde_json::json!({
            "type": "document", "media": format!("attach://f{i}"), "file_name": format!("renamed{i}.txt"),
        }));
    }
    parts.push(Part::Text {
        name: "media".into(),
        value: serde_json::Value::Array(media).to_string(),
    });
    let mut env = envelope(&w, 62, "sendMediaGroup", "");
    env.payload.http_method = "POST".into();
    env.payload.body = CallBody::Multipart { parts };
    bus::publish_envelope(w.bus.as_ref(), "calls", &env)
        .await
        .unwrap();

    let record = tokio::time::timeout(Duration::from_secs(10), to_send.next())
        .await
        .expect("on calls.send within 10 s")
        .unwrap();
    let read: Envelope<Call> = bus::decode_or_skip(&record).unwrap();
    let staged = read.payload.staged.expect("what the stages found");
    assert_eq!(staged.items.len(), 2);
    for item in &staged.items {
        assert!(item.file.is_some() && item.meta.is_some(), "{item:?}");
    }
    let answer = next_reply(&mut replies).await;
    assert_eq!(answer.payload.status, 200, "{:?}", answer.payload);
    let sent: serde_json::Value = reqwest::get(format!(
        "{}/control/calls?bot_id=62&method=sendMediaGroup",
        w.sandbox_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(sent.as_array().unwrap().len(), 1, "sent once");
    w.shutdown.cancel();
}

/// The future every call runs as stays small: a stage moves it into the call's task, so its
/// size is copied for every call. Wrappers written as `async fn`s around another future
/// (holding it twice) and inline work only file calls do had made it 67 KB in a release
/// build, guarded's share 30 KB; then 9 KB, in this (debug) build too; 5.5 KB since the
/// rare ways (flood control, a durable bus, a new upstream connection, reqwest) are boxed
/// and a call's `staged` with them (7.1 KB in a release build).
#[tokio::test]
async fn a_calls_future_stays_small() {
    let w = idle_world().await;
    let size = processors::call_future_size(&w.deps, &envelope(&w, 57, "sendMessage", ""));
    eprintln!("a call's future: {size} bytes");
    assert!(size < BOUND, "a call's future is {size} bytes");
    w.shutdown.cancel();
}
const BOUND: usize = 7 * 1024;
