//! Command-line flags; each has a `TELEPIPE_*` environment variable.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "telepipe",
    version,
    about = "A drop-in, boosted Telegram Bot API gateway built as a stream-processing pipeline.",
    long_about = "A drop-in, boosted Telegram Bot API gateway built as a stream-processing pipeline.\n\n\
        Point a bot at http://<listen>/ instead of https://api.telegram.org/ and it keeps working.\n\
        Every flag can also be given as the environment variable shown beside it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `telepipe=debug,info`.
    #[arg(long, global = true, env = "TELEPIPE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every role in one process: ingest, processors, egress (embedded bus and store).
    Serve(ServeArgs),
    /// Run the front door alone: bot calls, their answers, file downloads. On Kafka, each
    /// ingest instance needs its own `--instance`.
    Ingest(ServeArgs),
    /// Run processing stages alone (`all`, or by name), with `/metrics` and `/healthz` on
    /// `--listen`. Each stage is its own consumer group: run as many of each as the load needs.
    #[command(after_long_help = STAGES_HELP)]
    Processor {
        /// The stages to run: router, files, media, send, updates, or all (`passthrough` is an
        /// old name for all).
        #[arg(
            required = true,
            value_name = "STAGE",
            ignore_case = true,
            value_parser = ["router", "files", "media", "send", "updates", "all", "passthrough"]
        )]
        stages: Vec<String>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Run file downloads alone (`/file/bot<token>/<path>`), to scale them apart.
    Egress(ServeArgs),
    /// Run the fake Telegram Bot API server (for tests, benchmarks and offline bot work).
    Sandbox(SandboxArgs),
    /// List the record: every call (or those the filters select) as a table or JSON lines;
    /// `--stats` for counts, error rates and latency percentiles; `--follow` to watch.
    Audit(AuditArgs),
    /// Send recorded calls again to another Bot API (a gateway, a sandbox, Telegram) in their
    /// original encoding and order, and compare each answer with the recorded one.
    Replay(ReplayArgs),
    /// Forget what is older than the retention now (`--dry-run`: count it).
    Gc(GcArgs),
    /// Decode Bot API file ids: one JSON object per line (type, dc_id, id, access_hash,
    /// file_reference, photo_size_source, version, file_unique_id), or an error line.
    FileId {
        /// The file ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// What each stage of `telepipe processor` consumes and produces.
const STAGES_HELP: &str = "\
Stages (each its own consumer group; records between them carry references, never file bytes;
each publishes its output before it commits its input):
  router   consumes `calls` (group `processors`). Executes plain methods itself (passthrough,
           setWebhook/deleteWebhook/getWebhookInfo, getUpdates) and publishes their answers to
           the caller's `responses.<ingest>`; hands calls that need file work to `calls.files`.
           Answers getUpdates from the updates kept in the store, woken by `updates.kept`
           (group `polls.<instance>`, every record). Also forgets what is past retention.
  files    consumes `calls.files` (group `files`). Finds the file of a send or an upload, or
           of each item of a media group or an inline answer (URL fetch, uploaded part,
           re-typed or renamed file_id) and keeps it in the blob store, then publishes the call
           with a reference to it to `calls.media`. Runs getFile downloads whole; answers to
           `responses.<ingest>`.
  media    consumes `calls.media` (group `media`). Reads the file's metadata (libmediainfo, by
           ranges from the blob store) and decides the kind of sendFile/uploadFile; publishes
           the call with what it read to `calls.send`.
  send     consumes `calls.send` (group `send`). Uploads and sends the file (Bot API multipart,
           MTProto, or the file_id an earlier send of it left) and answers to
           `responses.<ingest>`. Takes the chat's flood control turn.
  updates  consumes `updates.raw` (group `updates`). The updates filter: what each bot asked
           for, to `updates` (webhook delivery).
  all      every stage in this process (`passthrough`: the same, its name from before).";

/// Flags of [`ServeArgs`] that only the processing stages use.
const PROCESSING_ONLY: &[&str] = &[
    "retain_calls",
    "retain_results",
    "bot_quota",
    "blob_cap",
    "per_bot_concurrency",
    "flood_control",
    "concurrency",
    "max_long_polls",
    "public_url",
    "file_wait",
    "max_file",
    "upstream_local",
    "allow_private_urls",
    "storage_chat_id",
    "allow_url_networks",
    "api_id",
    "api_hash",
    "mtproto_addr",
    "mtproto_key",
];

/// Flags of [`ServeArgs`] that only the ingest uses.
const INGEST_ONLY: &[&str] = &["max_body", "call_timeout", "poll_idle"];

/// Flags of [`ServeArgs`] that a role does not use, by the role's command: its `--help` leaves
/// them out (they are still accepted, so one environment can serve every role).
const UNUSED_BY_ROLE: [(&str, &[&[&str]]); 3] = [
    ("ingest", &[PROCESSING_ONLY]),
    ("processor", &[INGEST_ONLY]),
    // Downloads only: no calls taken (`--max-upload` bounds what the ingest accepts and the
    // files stage fetches), no webhooks delivered.
    (
        "egress",
        &[
            PROCESSING_ONLY,
            INGEST_ONLY,
            &["max_upload", "webhook_networks"],
        ],
    ),
];

impl Cli {
    /// The command line, each role's `--help` showing only the flags that role uses.
    pub fn command_by_role() -> clap::Command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        for (role, unused) in UNUSED_BY_ROLE {
            cmd = cmd.mut_subcommand(role, |mut sub| {
                for id in unused.iter().copied().flatten() {
                    sub = sub.mut_arg(*id, |a| a.hide(true));
                }
                sub
            });
        }
        cmd
    }

    /// Parses the process's arguments with [`Cli::command_by_role`].
    pub fn parse_by_role() -> Cli {
        use clap::FromArgMatches;
        let matches = Cli::command_by_role().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on for bots (`/bot<token>/<method>`, `/file/bot<token>/<path>`),
    /// `/metrics` and `/healthz`.
    #[arg(long, env = "TELEPIPE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub retain: RetainArgs,

    /// The Bot API server to forward to.
    #[arg(
        long,
        env = "TELEPIPE_UPSTREAM",
        default_value = "https://api.telegram.org"
    )]
    pub upstream: String,

    /// Seconds a call may take end to end (a getUpdates long poll adds its own timeout).
    #[arg(long, env = "TELEPIPE_CALL_TIMEOUT", default_value_t = 300)]
    pub call_timeout: u64,

    /// Seconds to wait for a TCP connection to upstream.
    #[arg(long, env = "TELEPIPE_CONNECT_TIMEOUT", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Largest JSON or form body, in bytes.
    #[arg(long, env = "TELEPIPE_MAX_BODY", default_value_t = 10 * 1024 * 1024)]
    pub max_body: usize,

    /// Largest file in a multipart upload, in bytes.
    #[arg(long, env = "TELEPIPE_MAX_UPLOAD", default_value_t = 2000 * 1024 * 1024)]
    pub max_upload: u64,

    /// Flood control for every bot: sends and edits leave within Telegram's limits (per
    /// private chat ~1/s with a burst of 3, per group 20/min, per bot 30/s, 1000/s with
    /// allow_paid_broadcast), in order per chat; an upstream 429 pauses only its chat and the
    /// call is sent again; a call whose deadline would pass in the queue gets Telegram's 429.
    #[arg(long, env = "TELEPIPE_FLOOD_CONTROL", value_parser = clap::builder::BoolishValueParser::new())]
    pub flood_control: bool,

    /// Calls of one bot processed at once (its fair share).
    #[arg(long, env = "TELEPIPE_PER_BOT_CONCURRENCY", default_value_t = 32)]
    pub per_bot_concurrency: usize,

    /// Calls processed at once in this process.
    #[arg(long, env = "TELEPIPE_CONCURRENCY", default_value_t = 4096)]
    pub concurrency: usize,

    /// Long polls (getUpdates with a timeout) that may wait at once without taking one of the
    /// `--concurrency` slots; past it they take slots like any call.
    #[arg(long, env = "TELEPIPE_MAX_LONG_POLLS", default_value_t = 100_000)]
    pub max_long_polls: usize,

    /// The bus: `memory` (in-process) or `kafka://host:port[,host:port]`.
    #[arg(long, env = "TELEPIPE_BUS", default_value = "memory")]
    pub bus: BusUrl,

    /// Partitions per topic (in-process bus, and topics created on Kafka but those each reader
    /// reads whole, the notices and reply topics, which get one).
    #[arg(long, env = "TELEPIPE_PARTITIONS", default_value_t = 8)]
    pub partitions: u32,

    /// Kafka: prefix of every topic and consumer group.
    #[arg(long, env = "TELEPIPE_KAFKA_PREFIX", default_value = "telepipe.")]
    pub kafka_prefix: String,

    /// Kafka: replication factor of the topics telepipe creates (on start, or before its
    /// first publish to one).
    #[arg(long, env = "TELEPIPE_KAFKA_REPLICATION", default_value_t = 1)]
    pub kafka_replication: i32,

    /// Kafka: consumer session timeout in ms (a group join takes about half of it on some
    /// brokers).
    #[arg(
        long,
        env = "TELEPIPE_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub kafka_session_timeout_ms: u32,

    /// Name of this instance (its reply topic is `responses.<instance>`). On Kafka every
    /// ingest instance needs its own, and so does every processor process of one stage (a
    /// router's waiting polls and each process's flood control notices are read in groups
    /// named after it).
    #[arg(long, env = "TELEPIPE_INSTANCE", default_value = "local")]
    pub instance: String,

    /// Threads that serve bots' connections, each a single-threaded runtime that a connection
    /// and its calls' work stay on ("lanes"); 0 serves them on the process's shared runtime.
    /// One per core when absent.
    #[arg(long, env = "TELEPIPE_LANES")]
    pub lanes: Option<usize>,

    /// Seconds shutdown waits for open requests, then for calls in flight.
    #[arg(long, env = "TELEPIPE_DRAIN_TIMEOUT", default_value_t = 10)]
    pub drain_timeout: u64,

    /// Base of the token-free `file_url` links (`<public-url>/storage/<bot>/<name>`); the
    /// listen address when absent.
    #[arg(long, env = "TELEPIPE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds the first getFile of a file waits for its download before answering 202 with
    /// the progress.
    #[arg(long, env = "TELEPIPE_FILE_WAIT", default_value_t = 50)]
    pub file_wait: u64,

    /// Largest file getFile stores, in bytes.
    #[arg(long, env = "TELEPIPE_MAX_FILE", default_value_t = 4000 * 1024 * 1024)]
    pub max_file: u64,

    /// The folder of a local Bot API server (`telegram-bot-api --local`) that this process
    /// can read: getFile's absolute paths are read from there.
    #[arg(long, env = "TELEPIPE_UPSTREAM_LOCAL")]
    pub upstream_local: Option<PathBuf>,

    /// Let URL uploads fetch from loopback, private, link-local and other non-public
    /// addresses (tests, trusted deployments). Off: such URLs get a 400.
    #[arg(long, env = "TELEPIPE_ALLOW_PRIVATE_URLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_urls: bool,

    /// A chat every bot can post to (a private channel with the bots as admins): where
    /// `upload<Type>`/`uploadFile` keep files when there is no MTProto (posted, file_id taken,
    /// message deleted).
    #[arg(long, env = "TELEPIPE_STORAGE_CHAT_ID", allow_hyphen_values = true)]
    pub storage_chat_id: Option<i64>,

    /// Seconds a polling bot (getUpdates) may go without asking before the gateway stops
    /// polling Telegram for it; its next getUpdates starts again, and Telegram keeps what came
    /// meanwhile for a day.
    #[arg(long, env = "TELEPIPE_POLL_IDLE", default_value_t = 900)]
    pub poll_idle: u64,

    /// Where webhooks may be delivered: `public`, `private` (RFC 1918, unique local IPv6),
    /// `loopback` and CIDRs, comma-separated. Link-local and cloud-metadata addresses and the
    /// gateway's own listening address are refused whatever this says. Checked at setWebhook
    /// and at every delivery. A host of other people's bots sets `public`.
    #[arg(
        long,
        env = "TELEPIPE_WEBHOOK_NETWORKS",
        value_delimiter = ',',
        default_value = "public,private,loopback"
    )]
    pub webhook_networks: Vec<String>,

    /// Networks URL uploads may fetch from although not public (`10.1.0.0/16,127.0.0.2/32`).
    #[arg(long, env = "TELEPIPE_ALLOW_URL_NETWORKS", value_delimiter = ',')]
    pub allow_url_networks: Vec<String>,

    /// MTProto application id (my.telegram.org), for files over the Bot API's limits.
    #[arg(long, env = "TELEGRAM_API_ID")]
    pub api_id: Option<i32>,

    /// MTProto application hash (my.telegram.org).
    #[arg(long, env = "TELEGRAM_API_HASH", hide_env_values = true)]
    pub api_hash: Option<String>,

    /// MTProto: connect every datacenter to this address instead of Telegram's (the
    /// sandbox's MTProto face).
    #[arg(long, env = "TELEPIPE_MTPROTO_ADDR")]
    pub mtproto_addr: Option<std::net::SocketAddrV4>,

    /// MTProto: the sandbox's master key (64 hex digits) for `--mtproto-addr`; each bot's
    /// auth key is derived from it, since the sandbox cannot do Telegram's key exchange.
    #[arg(long, env = "TELEPIPE_MTPROTO_KEY", hide_env_values = true)]
    pub mtproto_key: Option<String>,
}

impl ServeArgs {
    /// `--lanes`, or one per core (at least one) when absent.
    pub fn lanes(&self) -> usize {
        self.lanes.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// Where the record lives: what every command that reads or writes it needs.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Where the embedded store, the blob folder and the generated seal key live.
    #[arg(long, env = "TELEPIPE_DATA_DIR", default_value = "./telepipe-data")]
    pub data_dir: PathBuf,

    /// Cluster key sealing bot tokens in records, 64 hex digits. When absent, `serve` uses
    /// (or creates) `<data-dir>/seal.key`. Every process of one deployment needs the same key.
    #[arg(long, env = "TELEPIPE_SEAL_KEY", hide_env_values = true)]
    pub seal_key: Option<String>,

    /// The store: `sqlite` (`<data-dir>/store.db`) or `scylla://host:9042[,host:9042]/keyspace?rf=N`.
    #[arg(long, env = "TELEPIPE_STORE", default_value = "sqlite")]
    pub store: StoreUrl,

    /// SQLite: the most the write-ahead log may hold, in MiB. The writer checkpoints at half
    /// of it (at most 32 MiB), or an eighth (at most 4 MiB) while callers wait for its commits
    /// (a durable bus), and truncates the log back; past the limit it waits for readers rather
    /// than let the log grow.
    #[arg(long, env = "TELEPIPE_SQLITE_WAL_LIMIT_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub sqlite_wal_limit_mb: u64,

    /// The blob store: `dir` (`<data-dir>/blobs`), `dir:PATH` (a folder, shared when the roles
    /// run apart), or `s3://bucket[?endpoint=URL&region=R&allow_http=true]` (credentials from
    /// the `AWS_*` variables).
    #[arg(long, env = "TELEPIPE_BLOBS", default_value = "dir")]
    pub blobs: BlobsUrl,
}

/// How long the record keeps what.
#[derive(Args, Debug, Clone)]
pub struct RetainArgs {
    /// How long audit rows are kept (`30d`, `12h`); older ones are forgotten by a pass each
    /// minute and by `telepipe gc`.
    #[arg(long, env = "TELEPIPE_RETAIN_CALLS", default_value = "30d", value_parser = duration)]
    pub retain_calls: std::time::Duration,

    /// How long calls' answers (results) are kept: they answer redelivered calls, and audits
    /// show them and replays compare with them. `0s`: not kept (audit rows keep a digest).
    #[arg(long, env = "TELEPIPE_RETAIN_RESULTS", default_value = "24h", value_parser = duration)]
    pub retain_results: std::time::Duration,

    /// Most bytes of files kept for one bot (getFile, /storage/): past it, its least recently
    /// served files are evicted (fetched again on next use). `10GiB`, `500MB`; none when absent.
    #[arg(long, env = "TELEPIPE_BOT_QUOTA", value_parser = size)]
    pub bot_quota: Option<u64>,

    /// Most bytes of files kept for all bots together; past it, the least recently served
    /// files of any bot are evicted. None when absent.
    #[arg(long, env = "TELEPIPE_BLOB_CAP", value_parser = size)]
    pub blob_cap: Option<u64>,
}

impl RetainArgs {
    pub fn retention(&self) -> audit::retention::Retention {
        audit::retention::Retention {
            calls: self.retain_calls,
            results: self.retain_results,
            bot_quota: self.bot_quota,
            blob_cap: self.blob_cap,
        }
    }
}

/// A size as operators write it: `1048576`, `500MB`, `10GiB` (KB/MB/GB/TB are powers of
/// 1000, KiB/MiB/GiB/TiB of 1024).
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write 10GiB, 500MB, 1048576)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB...)"
            ))
        }
    };
    let v = n * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v as u64)
}

/// A duration as operators write it: `30d`, `24h`, `15m`, `90s`, `1h 30m`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write 30d, 24h, 15m...)"))
}

/// Which calls: the filters `audit` and `replay` share.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// One bot: its id, or `@username` (as seen in a getMe answer).
    #[arg(long)]
    pub bot: Option<String>,

    /// One method (any case).
    #[arg(long)]
    pub method: Option<String>,

    /// Calls from this time: RFC 3339 (`2026-12-01T10:00:00Z`) or a time ago (`15m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,

    /// Calls before this time (same forms as `--since`).
    #[arg(long)]
    pub until: Option<String>,

    /// Calls answered with this HTTP status.
    #[arg(long)]
    pub status: Option<u16>,

    /// Calls answered with this Bot API error code.
    #[arg(long)]
    pub error_code: Option<i64>,
}

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub select: SelectArgs,

    /// `table` (readable) or `json` (one JSON object a line).
    #[arg(long, default_value = "table")]
    pub format: String,

    /// After listing, keep watching for new calls (until Ctrl-C).
    #[arg(long)]
    pub follow: bool,

    /// Counts, error rates and p50/p95/p99 latency instead of the calls.
    #[arg(long)]
    pub stats: bool,

    /// With `--stats`: group by `method` or `bot`.
    #[arg(long, default_value = "method")]
    pub by: String,
}

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub select: SelectArgs,

    /// The Bot API base URL to send to (another gateway, a sandbox, https://api.telegram.org).
    #[arg(long)]
    pub target: String,

    /// Calls a second; without it, the original pace.
    #[arg(long)]
    pub rate: Option<f64>,

    /// List what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Replay one bot's calls as another bot: `BOT_ID=TOKEN` (repeatable).
    #[arg(long = "token-map", value_name = "BOT_ID=TOKEN")]
    pub token_map: Vec<String>,

    /// Where each call's comparison goes, as JSON lines (a summary goes to stdout).
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Let methods that act (anything but get*) reach api.telegram.org: a replay there would
    /// message real people.
    #[arg(long)]
    pub allow_sends: bool,

    /// Seconds one call may take.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,

    /// Read the calls from the bus's `calls` topic (from `--since` on, with a consumer group
    /// of its own that commits nothing) instead of the store: for testing a new version, or
    /// rebuilding a store. Needs `--bus kafka://...` and `--since`.
    #[arg(long)]
    pub from_bus: bool,

    /// With `--from-bus`: the bus (`kafka://host:port`).
    #[arg(long, env = "TELEPIPE_BUS")]
    pub bus: Option<String>,

    /// With `--from-bus`: the deployment's topic prefix.
    #[arg(long, env = "TELEPIPE_KAFKA_PREFIX", default_value = "telepipe.")]
    pub kafka_prefix: String,
}

#[derive(Args, Debug, Clone)]
pub struct GcArgs {
    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub retain: RetainArgs,

    /// Count what would be forgotten; forget nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "TELEPIPE_SANDBOX_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: SocketAddr,

    /// Where the sandbox keeps files (a fresh temporary folder when absent).
    #[arg(long, env = "TELEPIPE_SANDBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Largest multipart upload in bytes (Telegram: 50 MB).
    #[arg(long, env = "TELEPIPE_SANDBOX_MAX_UPLOAD", default_value_t = 50 * 1024 * 1024)]
    pub max_upload: u64,

    /// Act as a local Bot API server (`telegram-bot-api --local`): getFile of any size answers
    /// an absolute path under the data dir.
    #[arg(long, env = "TELEPIPE_SANDBOX_LOCAL", value_parser = clap::builder::BoolishValueParser::new())]
    pub local: bool,

    /// Enforce Telegram's flood limits (per private chat ~1/s with a burst of 3, per group
    /// 20/min, per bot 30/s, 1000/s with allow_paid_broadcast): sends and edits over them get
    /// Telegram's 429 with retry_after. Also `POST /control/limits {"enabled": bool}`.
    #[arg(long, env = "TELEPIPE_SANDBOX_FLOOD_LIMITS", value_parser = clap::builder::BoolishValueParser::new())]
    pub flood_limits: bool,

    /// Address of the MTProto face.
    #[arg(
        long,
        env = "TELEPIPE_SANDBOX_MTPROTO_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub mtproto_listen: std::net::SocketAddrV4,

    /// Master key of the MTProto face (64 hex digits; random when absent).
    #[arg(long, env = "TELEPIPE_SANDBOX_MTPROTO_KEY", hide_env_values = true)]
    pub mtproto_key: Option<String>,

    /// Also answer CQL here: a ScyllaDB stand-in (native protocol v4, one node, in memory)
    /// for `--store scylla://ADDR/keyspace`.
    #[arg(long, env = "TELEPIPE_SANDBOX_CQL_LISTEN")]
    pub cql_listen: Option<SocketAddr>,

    /// Run the CQL face alone (with `--cql-listen`): no Bot API or MTProto face.
    #[arg(long, env = "TELEPIPE_SANDBOX_CQL_ONLY", value_parser = clap::builder::BoolishValueParser::new(), requires = "cql_listen")]
    pub cql_only: bool,

    /// Write the `TELEPIPE_*` and `TELEGRAM_*` settings that point a gateway at this sandbox
    /// to this file (`set -a; . FILE; telepipe serve`).
    #[arg(long, env = "TELEPIPE_SANDBOX_ENV_FILE")]
    pub env_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Retention is written as operators write durations; nonsense is refused.
    #[test]
    fn retention_takes_durations() {
        let gc = |args: &[&str]| {
            let mut all = vec!["telepipe", "gc"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Gc(a)) => Ok((a.retain.retain_calls, a.retain.retain_results)),
                Ok(_) => unreachable!("parsed as gc"),
                Err(e) => Err(e.to_string()),
            }
        };
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(gc(&[]), Ok((30 * day, day)));
        assert_eq!(
            gc(&["--retain-calls", "7d", "--retain-results", "0s"]),
            Ok((7 * day, std::time::Duration::ZERO))
        );
        assert!(gc(&["--retain-calls", "a week"]).is_err());
    }

    #[test]
    fn sizes_are_written_as_operators_write_them() {
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("500MB"), Ok(500_000_000));
        assert_eq!(size("10GiB"), Ok(10 << 30));
        assert_eq!(size("1.5 KiB"), Ok(1536));
        assert!(size("ten").is_err() && size("5XB").is_err() && size("1e30GB").is_err());
    }

    /// Boolean variables take what operators write: 1/0, yes/no, on/off, true/false.
    #[test]
    fn boolean_variables_accept_what_operators_write() {
        let parse = || match Cli::try_parse_from(["telepipe", "serve"]).map(|c| c.command) {
            Ok(Command::Serve(a)) => Ok(a.allow_private_urls),
            Ok(_) => unreachable!("parsed as serve"),
            Err(e) => Err(e.to_string()),
        };
        for (value, expected) in [
            ("1", true),
            ("yes", true),
            ("on", true),
            ("true", true),
            ("0", false),
            ("no", false),
            ("off", false),
            ("false", false),
        ] {
            std::env::set_var("TELEPIPE_ALLOW_PRIVATE_URLS", value);
            assert_eq!(parse(), Ok(expected), "{value}");
        }
        std::env::set_var("TELEPIPE_ALLOW_PRIVATE_URLS", "maybe");
        assert!(parse().is_err());
        std::env::remove_var("TELEPIPE_ALLOW_PRIVATE_URLS");
        assert_eq!(parse(), Ok(false));
    }
}

/// `--store`, checked when the command line is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite`: `store.db` in the data folder.
    Sqlite,
    /// `scylla://host:9042[,host]/keyspace?rf=N`, as given.
    Scylla(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(StoreUrl::Sqlite),
            s if s.len() > "scylla://".len() && s.starts_with("scylla://") => {
                Ok(StoreUrl::Scylla(s.to_owned()))
            }
            _ => Err("must be `sqlite` or scylla://host:9042/keyspace".into()),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite => f.write_str("sqlite"),
            StoreUrl::Scylla(url) => f.write_str(url),
        }
    }
}

/// `--bus`, checked when the command line is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusUrl {
    /// `memory`: in-process, gone with the process.
    Memory,
    /// `kafka://host:port[,host:port]`, as given.
    Kafka(String),
}

impl BusUrl {
    /// Whether records outlive the process (and a call may be delivered again).
    pub fn durable(&self) -> bool {
        matches!(self, BusUrl::Kafka(_))
    }
}

impl std::str::FromStr for BusUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            return Ok(BusUrl::Memory);
        }
        bus::kafka::KafkaConfig::from_url(s)
            .map(|_| BusUrl::Kafka(s.to_owned()))
            .map_err(|_| "must be `memory` or kafka://host:port".to_owned())
    }
}

impl std::fmt::Display for BusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusUrl::Memory => f.write_str("memory"),
            BusUrl::Kafka(url) => f.write_str(url),
        }
    }
}

/// `--blobs`, checked when the command line is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobsUrl {
    /// `dir`: `blobs/` in the data folder.
    Dir,
    /// `dir:PATH`: a folder of its own (shared by the roles of one host).
    Folder(PathBuf),
    /// `s3://bucket[/prefix]?endpoint=...`, as given.
    S3(String),
}

impl std::str::FromStr for BlobsUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dir" => Ok(BlobsUrl::Dir),
            s if s.len() > 4 && s.starts_with("dir:") => {
                Ok(BlobsUrl::Folder(PathBuf::from(&s[4..])))
            }
            s if s.len() > 5 && s.starts_with("s3://") => Ok(BlobsUrl::S3(s.to_owned())),
            _ => Err("must be dir, dir:PATH or s3://bucket?...".into()),
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn store_bus_and_blobs_are_checked_when_read() {
        assert_eq!("sqlite".parse::<StoreUrl>(), Ok(StoreUrl::Sqlite));
        assert!(matches!(
            "scylla://h:9042/ks".parse::<StoreUrl>(),
            Ok(StoreUrl::Scylla(_))
        ));
        assert!("scylla://".parse::<StoreUrl>().is_err());
        assert!("postgres://x".parse::<StoreUrl>().is_err());
        assert_eq!("memory".parse::<BusUrl>(), Ok(BusUrl::Memory));
        let k = "kafka://h:9092".parse::<BusUrl>().unwrap();
        assert!(k.durable() && !BusUrl::Memory.durable());
        assert_eq!(k.to_string(), "kafka://h:9092");
        assert!("kafka://".parse::<BusUrl>().is_err());
        assert!("redis://h".parse::<BusUrl>().is_err());
        assert_eq!("dir".parse::<BlobsUrl>(), Ok(BlobsUrl::Dir));
        assert_eq!(
            "dir:/srv/b".parse::<BlobsUrl>(),
            Ok(BlobsUrl::Folder("/srv/b".into()))
        );
        assert!(matches!(
            "s3://b?region=x".parse::<BlobsUrl>(),
            Ok(BlobsUrl::S3(_))
        ));
        assert!("dir:".parse::<BlobsUrl>().is_err());
        assert!("ftp://x".parse::<BlobsUrl>().is_err());
    }
}
