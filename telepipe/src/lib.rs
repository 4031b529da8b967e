//! The composition root: configuration, and the roles wired together.
//!
//! `main` parses the command line and calls [`serve`] or [`sandbox`]; nothing else here
//! knows about the command line, so benchmarks and tests can start the same roles in-process.
//!
//! # Layout
//! - [`config`]: flags and their `TELEPIPE_*` variables.
//! - [`serve`]: every role in one process (this file).
//! - [`http`]: the HTTP surface: bot calls, file downloads, `/metrics`, `/healthz`.
//! - [`metrics`]: process-level gauges (bus depth).

pub mod config;
pub mod http;
pub mod metrics;
pub mod record;

use anyhow::Context;
use bus::kafka::{KafkaBus, KafkaConfig};
use bus::memory::MemoryBus;
use bus::reply::Correlator;
use bus::Bus;
use config::{BlobsUrl, BusUrl, DataArgs, SandboxArgs, ServeArgs, StoreUrl};
use lifecycle::Tasks;
use schemas::{SealKey, Sealer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::blobs::{Blobs, LocalBlobs};
use store::sqlite::SqliteStore;
use store::{SessionStore, Store};
use telegram::botapi::BotApi;
use tokio_util::sync::CancellationToken;

/// The seal key: given, or kept in `<data dir>/seal.key` (created on first start).
pub fn seal_key(given: Option<&str>, data_dir: &Path) -> anyhow::Result<SealKey> {
    if let Some(k) = given {
        return SealKey::from_hex(k).context("TELEPIPE_SEAL_KEY");
    }
    let path = data_dir.join("seal.key");
    match std::fs::read_to_string(&path) {
        Ok(s) => SealKey::from_hex(&s).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SealKey::generate();
            match write_private(&path, &key.to_hex()) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "created a new seal key");
                    Ok(key)
                }
                // Another role on this data dir created it first: use theirs.
                Err(_) if path.exists() => seal_key(None, data_dir),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// The store the arguments name.
pub async fn open_store(args: &DataArgs) -> anyhow::Result<Arc<dyn Store>> {
    match &args.store {
        StoreUrl::Sqlite => {
            let path = args.data_dir.join("store.db");
            let options = store::sqlite::SqliteOptions {
                wal_limit: args.sqlite_wal_limit_mb * 1024 * 1024,
                ..Default::default()
            };
            Ok(Arc::new(
                SqliteStore::open_with(&path, options).context("opening the SQLite store")?,
            ))
        }
        StoreUrl::Scylla(url) => Ok(Arc::new(
            store::scylla::ScyllaStore::connect(url)
                .await
                .context("connecting to ScyllaDB")?,
        )),
    }
}

/// The bus the arguments name.
pub fn open_blobs(args: &DataArgs) -> anyhow::Result<Arc<dyn Blobs>> {
    let folder = |p: &Path| -> anyhow::Result<Arc<dyn Blobs>> {
        Ok(Arc::new(LocalBlobs::open(p).with_context(|| {
            format!("opening the blob folder {}", p.display())
        })?))
    };
    match &args.blobs {
        BlobsUrl::Dir => folder(&args.data_dir.join("blobs")),
        BlobsUrl::Folder(path) => folder(path),
        BlobsUrl::S3(url) => Ok(Arc::new(
            store::object_blobs::ObjectBlobs::from_url(url).context("--blobs")?,
        )),
    }
}

pub fn open_bus(args: &ServeArgs, roles: Roles) -> anyhow::Result<Arc<dyn Bus>> {
    let url = match &args.bus {
        BusUrl::Memory => return Ok(Arc::new(MemoryBus::new(args.partitions))),
        BusUrl::Kafka(url) => url,
    };
    let mut cfg = KafkaConfig::from_url(url).context("--bus")?;
    cfg.prefix = args.kafka_prefix.clone();
    cfg.partitions = args.partitions as i32;
    cfg.replication = args.kafka_replication;
    cfg.session_timeout_ms = args.kafka_session_timeout_ms;
    cfg.client_id = format!("telepipe-{}", args.instance);
    cfg.local = roles.local_topics(&args.instance);
    Ok(Arc::new(KafkaBus::new(cfg).context("connecting to Kafka")?))
}

/// Which roles a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// Everything: `telepipe serve`.
    All,
    /// The front door: bot calls, their answers (the reply consumer), file downloads.
    Ingest,
    /// Processing stages, with `/metrics` and `/healthz` only.
    Processor(Stages),
    /// File downloads only (scaled apart from ingest).
    Egress,
}

impl Roles {
    fn ingest(self) -> bool {
        matches!(self, Roles::All | Roles::Ingest)
    }
    fn stages(self) -> Stages {
        match self {
            Roles::All => Stages::ALL,
            Roles::Processor(stages) => stages,
            Roles::Ingest | Roles::Egress => Stages::NONE,
        }
    }
    fn downloads(self) -> bool {
        matches!(self, Roles::All | Roles::Ingest | Roles::Egress)
    }

    /// The topics these roles both publish and read, on Kafka handed over within the process
    /// (`bus::kafka::KafkaConfig::local`): a stage's input where the stage before it runs too
    /// (the ingest before the router), the reply topic where the ingest and the router run
    /// together (their answers are handed to the waiting calls directly), and the notices that
    /// wake the router's polls where the deliverer (with the ingest) runs too. Publishers in
    /// other processes may write them too (several ingests, file workers apart): those
    /// records wait for the fetch, up to its long wait on a broker like Tansu.
    pub fn local_topics(self, instance: &str) -> Vec<String> {
        use bus::topics;
        let s = self.stages();
        let ingest = self.ingest();
        [
            (ingest && s.router, topics::CALLS.to_owned()),
            (s.router && s.files, topics::CALLS_FILES.to_owned()),
            (s.files && s.media, topics::CALLS_MEDIA.to_owned()),
            (s.media && s.send, topics::CALLS_SEND.to_owned()),
            (ingest && s.router, topics::responses(instance)),
            // Kept by the deliverer (with the ingest), read by the router to wake its polls.
            (ingest && s.router, topics::UPDATES_KEPT.to_owned()),
        ]
        .into_iter()
        .filter_map(|(here, topic)| here.then_some(topic))
        .collect()
    }
}

/// The processing stages a process runs (`telepipe processor <stage>...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stages {
    /// Reads `calls`: plain methods executed, file work handed to `files`.
    pub router: bool,
    /// Reads `calls.files`: finds and keeps the files of sends, uploads, media groups and
    /// inline answers (on to `media`); getFile.
    pub files: bool,
    /// Reads `calls.media`: reads a send's file (libmediainfo), decides its kind (on to
    /// `send`).
    pub media: bool,
    /// Reads `calls.send`: uploads and sends files (Bot API multipart or MTProto).
    pub send: bool,
    /// Reads `updates.raw`: the updates filter, feeding `updates` (webhook delivery).
    pub updates: bool,
}

impl Stages {
    pub const ALL: Stages = Stages {
        router: true,
        files: true,
        media: true,
        send: true,
        updates: true,
    };
    pub const NONE: Stages = Stages {
        router: false,
        files: false,
        media: false,
        send: false,
        updates: false,
    };

    /// The processing stages among them, in the order a call crosses them.
    pub fn processing(self) -> Vec<processors::Stage> {
        use processors::Stage;
        [
            (self.router, Stage::Router),
            (self.files, Stage::Files),
            (self.media, Stage::Media),
            (self.send, Stage::Send),
        ]
        .into_iter()
        .filter_map(|(on, stage)| on.then_some(stage))
        .collect()
    }

    /// The stages named on the command line. `all` (and `passthrough`, its name from before
    /// the stages) is every stage.
    pub fn parse(names: &[String]) -> anyhow::Result<Stages> {
        let mut stages = Stages::NONE;
        for name in names {
            match name.to_ascii_lowercase().as_str() {
                "all" | "passthrough" => stages = Stages::ALL,
                "router" => stages.router = true,
                "files" => stages.files = true,
                "media" => stages.media = true,
                "send" => stages.send = true,
                "updates" => stages.updates = true,
                other => anyhow::bail!(
                    "no stage named {other:?}: use router, files, media, send, updates or all \
                     (`telepipe processor --help` says what each does)"
                ),
            }
        }
        if stages == Stages::NONE {
            anyhow::bail!("name at least one stage: router, files, media, send, updates or all");
        }
        Ok(stages)
    }
}

/// Runs every role in one process until `shutdown`. `ready` receives the bound address.
pub async fn serve(
    args: ServeArgs,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    run(Roles::All, args, shutdown, ready).await
}

/// Runs `roles` until `shutdown`. `ready` receives the bound address.
pub async fn run(
    roles: Roles,
    args: ServeArgs,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data.data_dir)
        .with_context(|| format!("creating {}", args.data.data_dir.display()))?;
    let sealer = Sealer::new(&seal_key(
        args.data.seal_key.as_deref(),
        &args.data.data_dir,
    )?);
    let store = open_store(&args.data).await?;
    let blobs = open_blobs(&args.data)?;
    let bus = open_bus(&args, roles)?;
    let upstream = BotApi::new(&args.upstream, Duration::from_secs(args.connect_timeout))
        .context("building the upstream client")?;
    let drain = Duration::from_secs(args.drain_timeout);

    // Shutdown runs in order: the HTTP server stops accepting and finishes its open requests
    // (which need the pipeline to answer them), then the pipeline drains.
    let tasks = Tasks::new(shutdown.clone());
    let pipeline = CancellationToken::new();
    let http_done = CancellationToken::new();

    // Bound first: webhooks must know the gateway's own address to refuse it.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let destinations = Arc::new(
        fetch::Destinations::parse(&args.webhook_networks)
            .map_err(anyhow::Error::msg)
            .context("--webhook-networks")?
            .with_own(&[addr]),
    );
    let mut hook_surface = None;
    let mut local_replies = None;
    let ingest = if roles.ingest() {
        let correlator = Correlator::new();
        local_replies = Some(processors::LocalReplies {
            topic: bus::topics::responses(&args.instance),
            correlator: correlator.clone(),
        });
        let ingest = ingest::Ingest::new(
            ingest::IngestConfig {
                instance: args.instance.clone(),
                max_body: args.max_body,
                max_upload: args.max_upload,
                call_timeout: Duration::from_secs(args.call_timeout),
                ..Default::default()
            },
            bus.clone(),
            blobs.clone(),
            sealer.clone(),
            correlator.clone(),
        );
        bus.ensure_topics(&ingest.topics()).await?;
        // The reply consumer lives with the ingest that holds the waiting connections.
        let replies = egress::subscribe(bus.as_ref(), &args.instance).await?;
        tasks.spawn(
            "replies",
            egress::run(replies, correlator, pipeline.clone()),
        );
        // Webhooks the gateway keeps: polling Telegram for them, and pushing to them. One
        // process should run these (the one ingest of `serve`; see ARCHITECTURE.md).
        let hooks = webhooks::Deps {
            bus: bus.clone(),
            store: store.clone(),
            upstream: upstream.clone(),
            sealer: sealer.clone(),
            destinations: destinations.clone(),
            poll_idle: Duration::from_secs(args.poll_idle),
        };
        let producer = format!("ingest/{}", args.instance);
        tasks.spawn(
            "webhook-poller",
            webhooks::poll::run(hooks.clone(), producer.clone(), pipeline.clone()),
        );
        tasks.spawn(
            "webhook-delivery",
            webhooks::deliver::run(hooks.clone(), producer.clone(), pipeline.clone()),
        );
        hook_surface = Some((hooks, producer));
        Some(ingest)
    } else {
        None
    };
    let downloads = roles.downloads().then(|| {
        egress::downloads::Downloads::new(
            upstream.clone(),
            store.clone(),
            store.clone(),
            blobs.clone(),
            sealer.clone(),
        )
    });
    let stages = roles.stages();
    let processing = stages.processing();
    // A stage whose calls go on to one this process does not run: said once at the start,
    // since another process must run it.
    let all = processors::Stage::ALL;
    let missing: Vec<&str> = all
        .windows(2)
        .filter(|w| processing.contains(&w[0]) && !processing.contains(&w[1]))
        .map(|w| w[1].name())
        .collect();
    if !missing.is_empty() {
        // Said, not warned: running each stage in a process of its own is the point.
        tracing::info!(
            missing = missing.join(","),
            "this process hands calls on to stages it does not run: they wait on the bus until \
             a `telepipe processor` runs each (`processor router` meant every stage before the \
             stages were split)"
        );
    }
    if stages.updates {
        tasks.spawn(
            "updates-filter",
            webhooks::filter::run(
                webhooks::Deps {
                    bus: bus.clone(),
                    store: store.clone(),
                    upstream: upstream.clone(),
                    sealer: sealer.clone(),
                    destinations: destinations.clone(),
                    poll_idle: Duration::from_secs(args.poll_idle),
                },
                args.storage_chat_id,
                pipeline.clone(),
            ),
        );
    }
    if !processing.is_empty() {
        let files = processors::files::Files::new(
            processors::files::FilesConfig {
                public_url: args
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}"))
                    .trim_end_matches('/')
                    .to_owned(),
                wait: Duration::from_secs(args.file_wait),
                max_file: args.max_file,
                local_dir: args.upstream_local.clone(),
                fetch: fetch::FetchPolicy {
                    allow_private: args.allow_private_urls,
                    allowed: url_networks(&args.allow_url_networks)?,
                    max_size: args.max_upload,
                    ..Default::default()
                },
                max_upload: args.max_upload,
                storage_chat: args.storage_chat_id,
            },
            mtproto(&args, store.clone(), sealer.clone())?,
        );
        let cfg = processors::ProcessorConfig {
            instance: args.instance.clone(),
            per_bot: args.per_bot_concurrency,
            total: args.concurrency,
            drain_timeout: drain,
            durable_bus: args.bus.durable(),
            result_ttl: args.retain.retain_results,
            polls: args.max_long_polls,
        };
        // Flood control: on for every bot with --flood-control; each bot's own settings
        // (setFloodControl) read before the stages start, and again every 10 s.
        let flood = processors::flood::Flood::new(Default::default(), args.flood_control);
        // A file call's place in its chat's queue crosses to a files stage in this process
        // (the in-process bus hands every record to it); across processes it cannot.
        let flood = Arc::new(
            if stages.router && stages.files && stages.media && stages.send && !args.bus.durable() {
                flood.keeping_places_across_hand_over()
            } else {
                flood
            },
        );
        if let Err(error) = flood.load(store.as_ref()).await {
            // Read again within 10 s (`keep_loaded`); meanwhile the gateway's default holds.
            tracing::warn!(%error, "could not read the bots' flood control settings");
        }
        tasks.spawn(
            "flood-settings",
            flood.clone().keep_loaded(store.clone(), pipeline.clone()),
        );
        // Clients gone (their queued calls are not sent) and the chats the updates show: read
        // whole by each process, since a bot's call may wait in any of its stages.
        tasks.spawn(
            "flood-watch",
            processors::flood::watch(
                flood.clone(),
                bus.clone(),
                // A process with the router keeps the group it had before the file stages
                // were split (a new group would read the topics' history again).
                format!(
                    "flood.{}.{}",
                    args.instance,
                    if stages.router {
                        "router".to_owned()
                    } else {
                        processing
                            .iter()
                            .map(|s| s.name())
                            .collect::<Vec<_>>()
                            .join("-")
                    }
                ),
                stages.router,
                pipeline.clone(),
            ),
        );
        let deps = processors::Deps {
            bus: bus.clone(),
            store: store.clone(),
            blobs: blobs.clone(),
            upstream,
            sealer,
            files,
            public_url: args
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            local_replies,
            webhook_destinations: destinations.clone(),
            polls_stop: Some(shutdown.clone()),
            actions: Default::default(),
            flood: Some(flood.clone()),
            polls: Default::default(),
        };
        for stage in processing
            .iter()
            .filter(|s| **s != processors::Stage::Router)
        {
            let name = match stage {
                processors::Stage::Files => "files-stage",
                processors::Stage::Media => "media-stage",
                _ => "send-stage",
            };
            tasks.spawn(
                name,
                processors::run(*stage, cfg.clone(), deps.clone(), pipeline.clone()),
            );
        }
        if stages.router {
            // getUpdates waiting here wake as their bots' updates are kept.
            tasks.spawn(
                "poll-wakes",
                processors::polls::listen(
                    bus.clone(),
                    deps.polls.clone(),
                    args.instance.clone(),
                    pipeline.clone(),
                ),
            );
            tasks.spawn(
                "router-stage",
                processors::run(processors::Stage::Router, cfg, deps, pipeline.clone()),
            );
        }
    }
    if stages.router {
        // Forgetting what is past retention: one job, with the stage every deployment runs.
        tasks.spawn(
            "retention",
            audit::retention::run(
                store.clone(),
                blobs.clone(),
                args.retain.retention(),
                pipeline.clone(),
            ),
        );
    }

    let lanes = match args.lanes() {
        0 => None,
        n => Some(Arc::new(
            lifecycle::lanes::Lanes::start("tp-lane", n).context("starting the lanes")?,
        )),
    };
    let service = http::service(http::Surface {
        ingest,
        downloads,
        hooks: hook_surface,
        bus: bus.clone(),
        lanes: lanes.clone(),
    });
    {
        let stop = shutdown.clone();
        let done = http_done.clone();
        let lanes = lanes.clone();
        tasks.spawn("http", async move {
            // The open requests get the drain, then the calls they wait for get theirs (the
            // pipeline's, which answers what is left).
            http::serve(listener, service, lanes, stop, 2 * drain).await;
            done.cancel();
            Ok::<(), std::convert::Infallible>(())
        });
    }
    {
        let root = shutdown.clone();
        let pipeline = pipeline.clone();
        tasks.spawn("shutdown-sequencer", async move {
            root.cancelled().await;
            if tokio::time::timeout(drain, http_done.cancelled())
                .await
                .is_err()
            {
                tracing::warn!("open requests did not finish in time; stopping the pipeline");
            }
            pipeline.cancel();
            Ok::<(), std::convert::Infallible>(())
        });
    }
    tracing::info!(%addr, roles = ?roles, upstream = %args.upstream, bus = %args.bus, data_dir = %args.data.data_dir.display(), "telepipe serving");
    println!("telepipe listening on http://{addr}");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let joined = tasks.join().await;
    // The last calls' audit rows may still wait in the store's queue (a batch lingering for
    // company, or rows behind a checkpoint): written before the process exits with them.
    // Bounded: a write lock another process holds must not keep this one from exiting.
    match tokio::time::timeout(drain, store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "could not write the queued audit rows"),
        Err(_) => {
            tracing::error!("the queued audit rows were not written within the drain timeout")
        }
    }
    // Last: the connections and the calls' tasks ran on them. What is left there (a download's
    // audit row, a cancellation's publish: spawned and not tracked) goes as it went with the
    // process's runtime before lanes.
    if let Some(lanes) = lanes {
        lanes.stop(drain).await;
    }
    joined?;
    tracing::info!("telepipe stopped");
    Ok(())
}

/// Runs the sandbox until `shutdown`.
/// `--allow-url-networks`: `addr/len` (or a bare address) each.
fn url_networks(given: &[String]) -> anyhow::Result<Vec<(std::net::IpAddr, u8)>> {
    given
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            fetch::parse_net(s.trim()).map_err(|e| anyhow::anyhow!("--allow-url-networks: {e}"))
        })
        .collect()
}

/// The MTProto backend, when `TELEGRAM_API_ID` and `TELEGRAM_API_HASH` are given.
fn mtproto(
    args: &ServeArgs,
    store: Arc<dyn SessionStore>,
    sealer: Sealer,
) -> anyhow::Result<Option<Arc<dyn telegram::mtproto::Mtproto>>> {
    let (api_id, api_hash) = match (args.api_id, &args.api_hash) {
        (None, None) => return Ok(None),
        (Some(id), Some(hash)) => (id, hash.clone()),
        _ => anyhow::bail!("TELEGRAM_API_ID and TELEGRAM_API_HASH go together"),
    };
    let sandbox_key = args
        .mtproto_key
        .as_deref()
        .map(|k| -> anyhow::Result<[u8; 32]> {
            let b = hex::decode(k.trim()).context("TELEPIPE_MTPROTO_KEY is not hex")?;
            b.try_into()
                .map_err(|_| anyhow::anyhow!("TELEPIPE_MTPROTO_KEY must be 64 hex digits"))
        })
        .transpose()?;
    if sandbox_key.is_some() != args.mtproto_addr.is_some() {
        anyhow::bail!("TELEPIPE_MTPROTO_ADDR and TELEPIPE_MTPROTO_KEY go together (a sandbox)");
    }
    Ok(Some(Arc::new(telegram::grammers::Grammers::new(
        telegram::grammers::GrammersConfig {
            api_id,
            api_hash,
            dc_addr: args.mtproto_addr,
            sandbox_key,
        },
        Arc::new(StoreVault { store, sealer }),
    ))))
}

/// MTProto sessions in the store, sealed under the cluster key for their bot.
struct StoreVault {
    store: Arc<dyn SessionStore>,
    sealer: Sealer,
}

#[async_trait::async_trait]
impl telegram::grammers::SessionVault for StoreVault {
    async fn load(&self, bot: schemas::BotId) -> Result<Option<Vec<u8>>, String> {
        let Some(sealed) = self.store.session(bot).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        match self.sealer.open_bytes(bot, &sealed) {
            Ok(b) => Ok(Some(b)),
            Err(error) => {
                // Another cluster key, or damage: a new session is the way out.
                tracing::warn!(%error, bot_id = %bot, "a saved MTProto session does not open; starting a new one");
                Ok(None)
            }
        }
    }

    async fn save(&self, bot: schemas::BotId, session: Vec<u8>) -> Result<(), String> {
        let sealed = self.sealer.seal_bytes(bot, &session);
        self.store
            .put_session(bot, &sealed)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The sandbox's MTProto face, on a runtime of its own (two workers): Telegram answers one
/// bot's Bot API calls whatever another bot uploads, and so must its stand-in. On the Bot
/// API face's runtime, decrypting uploads held the very workers a sendMessage waited for
/// (the `stages` bench's floor: 2 ms idle, 38–63 ms under four uploads).
fn mtproto_face(
    sb: sandbox::Sandbox,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sandbox-mtproto".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sandbox-mtproto")
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        sandbox::mtproto::serve(sb, listener, shutdown).await
                    })
                });
            let _ = done_tx.send(served);
        })?;
    Ok(async move {
        done.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the MTProto face's thread ended")))
    })
}

/// Writes the sandbox's settings for a gateway where `--env-file` says (whole or not at all).
fn write_env_file(path: Option<&std::path::Path>, env: &str) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, env).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub async fn sandbox(
    args: SandboxArgs,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let tasks = Tasks::new(shutdown.clone());
    let mut env = String::new();
    if let Some(addr) = args.cql_listen {
        let cql = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let cql_addr = cql.local_addr()?;
        env.push_str(&format!("TELEPIPE_STORE=scylla://{cql_addr}/telepipe\n"));
        println!("sandbox cql on {cql_addr}");
        tasks.spawn("sandbox-cql", sandbox::cql::serve(cql, shutdown.clone()));
    }
    if args.cql_only {
        write_env_file(args.env_file.as_deref(), &env)?;
        tasks.join().await?;
        return Ok(());
    }
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("telepipe-sandbox-{}", schemas::CallId::new())),
    };
    let mut cfg = sandbox::SandboxConfig::new(data_dir);
    cfg.max_upload = args.max_upload;
    cfg.local = args.local;
    cfg.flood_limits = args.flood_limits;
    if let Some(k) = &args.mtproto_key {
        cfg.mtproto_key = hex::decode(k.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("--mtproto-key must be 64 hex digits")?;
    }
    let master = hex::encode(cfg.mtproto_key);
    let sb = sandbox::Sandbox::new(cfg).context("starting the sandbox")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mtproto = tokio::net::TcpListener::bind(args.mtproto_listen)
        .await
        .with_context(|| format!("binding {}", args.mtproto_listen))?;
    let mtproto_addr = mtproto.local_addr()?;
    // Any id and hash do for the sandbox; the key is what lets grammers in.
    env.push_str(&format!(
        "TELEPIPE_UPSTREAM=http://{addr}\nTELEPIPE_MTPROTO_ADDR={mtproto_addr}\n\
         TELEPIPE_MTPROTO_KEY={master}\nTELEGRAM_API_ID=1\nTELEGRAM_API_HASH=sandbox\n"
    ));
    write_env_file(args.env_file.as_deref(), &env)?;
    println!("sandbox mtproto on {mtproto_addr}");
    println!("sandbox listening on http://{addr}");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    tasks.spawn(
        "sandbox-mtproto",
        mtproto_face(sb.clone(), mtproto, shutdown.clone())?,
    );
    tasks.spawn("sandbox-http", sandbox::serve(sb, listener, shutdown));
    tasks.join().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Roles, Stages};

    fn parse(names: &[&str]) -> anyhow::Result<Stages> {
        Stages::parse(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Handed over within a process: what one of its roles publishes and another reads, and
    /// nothing whose publisher runs elsewhere.
    #[test]
    fn local_topics_are_those_published_and_read_here() {
        let all = Roles::All.local_topics("a");
        assert_eq!(
            all,
            [
                "calls",
                "calls.files",
                "calls.media",
                "calls.send",
                "responses.a",
                "updates.kept"
            ]
        );
        assert!(Roles::Ingest.local_topics("a").is_empty());
        assert!(Roles::Egress.local_topics("a").is_empty());
        let files_on = parse(&["files", "media", "send"]).unwrap();
        assert_eq!(
            Roles::Processor(files_on).local_topics("a"),
            ["calls.media", "calls.send"]
        );
        assert!(Roles::Processor(parse(&["router"]).unwrap())
            .local_topics("a")
            .is_empty());
        assert_eq!(
            Roles::Processor(Stages::ALL).local_topics("a"),
            ["calls.files", "calls.media", "calls.send"]
        );
    }

    #[test]
    fn stages_by_name_and_the_old_names() {
        let s = parse(&["router", "updates"]).unwrap();
        assert!(s.router && s.updates && !s.files);
        assert!(parse(&["files"]).unwrap().files);
        assert_eq!(parse(&["all"]).unwrap(), Stages::ALL);
        assert_eq!(parse(&["passthrough"]).unwrap(), Stages::ALL);
        assert!(parse(&["Files", "ROUTER"]).unwrap().router);
        assert!(parse(&[]).is_err());
        let s = parse(&["files", "media", "send"]).unwrap();
        assert!(s.files && s.media && s.send && !s.router);
        assert_eq!(
            s.processing(),
            [
                processors::Stage::Files,
                processors::Stage::Media,
                processors::Stage::Send
            ]
        );
        assert!(parse(&["metadata"]).is_err());
    }
}
