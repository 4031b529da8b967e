//! Benchmarks. `cargo run --release -p telepipe-bench -- passthrough` measures, in one run,
//! Bot API calls straight to the sandbox and the same calls through `telepipe serve`
//! (embedded mode): requests per second and p50/p99 latency, sequential and concurrent.
//!
//! The sandbox and the gateway each run on their own tokio runtime in this process; the load
//! generator runs on a third. All share the machine's cores, so figures are comparable within
//! one run, not across machines.

mod bare;
mod cpu;
mod files;
mod flood;
mod floor;
mod instructions;
mod nginx;
mod pair;
mod polls;
mod proxy;
mod record;
mod soak;
mod stages;
mod uploads;
mod webhooks;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The gateway's allocator (`telepipe/src/main.rs` says why), so that the gateways run in this
/// process (`passthrough`) and `bare-proxy` allocate as `telepipe serve` does. The sandbox and
/// the load generator `passthrough` runs here allocate with it too: its figures from before
/// (glibc's malloc, until 2026-12-03) are not comparable with later ones.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The URL server of `stages` and `uploads` on its own (`stages` runs it as a process of
    /// its own, under `nice`, as the internet's machines it stands in for).
    #[command(hide = true)]
    UrlServer,
    /// `proxy`'s bare hyper proxy in front of 127.0.0.1:`upstream_port` (a process of its own,
    /// its CPU measured as the others').
    #[command(hide = true)]
    BareProxy { upstream_port: u16 },
    /// Passthrough throughput and latency: direct to the sandbox vs through the gateway.
    Passthrough {
        /// Requests per measured pass.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Concurrent clients in the concurrent passes.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// A Kafka broker (`host:port`): also measure the gateway on Kafka.
        #[arg(long)]
        kafka: Option<String>,
    },
    /// getFile of a big file over MTProto (throughput, gateway peak RSS), then `/storage/`
    /// downloads against nginx serving the same file.
    Files {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        /// File size in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        size: u64,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Uploads: multipart and URL sends within the Bot API's limits and past them (MTProto),
    /// with the gateway's peak RSS; then the dedupe ratio (the same file sent twice).
    Uploads {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        /// Size of the big (MTProto) uploads, in MiB.
        #[arg(long, default_value_t = 200)]
        big_mib: u64,
        /// Size of the dedupe file, in MiB.
        #[arg(long, default_value_t = 100)]
        dedupe_mib: u64,
    },
    /// The hot path against nginx: sendMessage through nginx `proxy_pass` and through
    /// `telepipe serve` (embedded, every call recorded) to the same nginx upstream, loaded by
    /// wrk in turns; every call's audit row counted afterwards.
    Proxy {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        /// Seconds a pass.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// wrk's connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// nginx and telepipe passes, taken in turns.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Two gateway builds (or one build with two environments) side by side on one nginx
    /// upstream, wrk runs alternating: req/s, p50, p99, CPU per call (the SQLite writer's
    /// share too) and the machine's idle time per run. How a change is measured against the
    /// code before it on a machine whose speed moves.
    Pair {
        /// The first gateway's binary.
        #[arg(long)]
        a: std::path::PathBuf,
        /// The second gateway's binary.
        #[arg(long)]
        b: std::path::PathBuf,
        /// `KEY=VALUE` for the first gateway's environment (repeatable).
        #[arg(long)]
        a_env: Vec<String>,
        /// `KEY=VALUE` for the second gateway's environment (repeatable).
        #[arg(long)]
        b_env: Vec<String>,
        /// Seconds a run.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// wrk's connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Runs of each, taken in turns.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Instructions per sendMessage of one gateway build (or two, or one build under two
    /// environments), counted by callgrind over all its threads on one nginx upstream: a
    /// figure the machine's speed does not move. Needs valgrind.
    Instructions {
        /// The first gateway's binary.
        #[arg(long, default_value = "target/release/telepipe")]
        a: std::path::PathBuf,
        /// A second gateway's binary, counted after the first.
        #[arg(long)]
        b: Option<std::path::PathBuf>,
        /// `KEY=VALUE` for the first gateway's environment (repeatable; `TELEPIPE_LOG` is
        /// `info`, the default, unless given).
        #[arg(long)]
        a_env: Vec<String>,
        /// `KEY=VALUE` for the second gateway's environment (repeatable; with no `--b`, the
        /// first binary is counted again under it).
        #[arg(long)]
        b_env: Vec<String>,
        /// Seconds of load counted (under valgrind a call is ~50x slower).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// wrk's connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// A sustained run: req/s, p99, data folder, database, WAL, bytes per call and RSS per
    /// window, with the first and last minute compared.
    Soak {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Seconds a window.
        #[arg(long, default_value_t = 30)]
        window: u64,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// The Kafka broker's own round trip (ping-pong through the gateway's rdkafka settings).
    Floor {
        /// The broker (`host:port`).
        #[arg(long)]
        kafka: String,
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
        /// Pings in flight at once (1: the latency floor; more: the broker's ceiling).
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Slices of the run reported apart, to see whether the round trip grows as the
        /// topics fill.
        #[arg(long, default_value_t = 1)]
        windows: usize,
    },
    /// A broadcast through flood control: one bot, one message to each of many private chats,
    /// to a sandbox enforcing Telegram's limits; 429s reaching the bot, the upstream rate, the
    /// time against the theoretical minimum.
    Flood {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Calls waiting at the gateway at once.
        #[arg(long, default_value_t = 1000)]
        in_flight: usize,
    },
    /// Many bots long-polling: the gateway's RSS per parked poll, and another bot's
    /// sendMessage latency at a steady rate with and without the polls (`ulimit -n` must allow
    /// twice the polls).
    Polls {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        #[arg(long, default_value_t = 5000)]
        polls: usize,
        /// sendMessage a second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What a long upload costs everyone else: on Kafka, sendMessage p50/p99 of another bot
    /// idle and while big URL uploads run, with the router and files stages apart and together.
    Stages {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        /// The broker (`host:port`; `scripts/kafka-broker.sh` starts one).
        #[arg(long)]
        kafka: String,
        /// Uploads at once; 0 times two idle windows (the bench's own drift).
        #[arg(long, default_value_t = 4)]
        uploads: usize,
        /// Size of each upload, in MiB.
        #[arg(long, default_value_t = 200)]
        mib: u64,
        /// sendMessage a second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Seconds of each timed window (a p99 of 500 samples, at 5 s, moved a round's ratio
        /// by ±0.5 on its own).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `nice` of the sandbox (Telegram, another party's machine): 10 keeps its MTProto
        /// work off the gateway's CPU as far as one machine can; 0 shares it evenly.
        #[arg(long, default_value_t = 10)]
        sandbox_nice: u8,
        /// `nice` of the file stages' process in the apart topology (what stands in for the
        /// machines of its own it would have).
        #[arg(long, default_value_t = 19)]
        files_nice: u8,
        /// Idle and loaded windows a topology; past one, the samples are also pooled.
        #[arg(long, default_value_t = 4)]
        rounds: usize,
    },
    /// Reading the record: `telepipe audit --stats` and listings over a filled store, and the
    /// replay rate into a fresh sandbox.
    Record {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        /// Audit rows in the filled store.
        #[arg(long, default_value_t = 1_000_000)]
        calls: u64,
        /// Calls made, then replayed.
        #[arg(long, default_value_t = 5000)]
        replay_calls: usize,
    },
    /// Webhooks: updates delivered per second across many bots, order kept per bot.
    Webhooks {
        /// The release binary (`cargo build --release -p telepipe`).
        #[arg(long, default_value = "target/release/telepipe")]
        bin: std::path::PathBuf,
        #[arg(long, default_value_t = 1000)]
        bots: i64,
        /// Updates per bot.
        #[arg(long, default_value_t = 10)]
        per_bot: usize,
    },
}

/// Starts `f` on a runtime of its own thread; returns the address it reports.
fn spawn_server<F, Fut>(name: &str, f: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(tokio::sync::oneshot::Sender<SocketAddr>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            if let Err(e) = rt.block_on(f(tx)) {
                eprintln!("server failed: {e:#}");
            }
        })?;
    rx.blocking_recv().context("server did not start")
}

/// The process of this machine listening on the broker's port, if the bench was given one
/// broker on a loopback address (a remote host's port may be a local proxy's, which would be
/// measured in its place).
fn local_broker_pid(brokers: &str) -> Option<u32> {
    let addr: SocketAddr = brokers.parse().ok()?;
    addr.ip()
        .is_loopback()
        .then(|| cpu::listener_pid(addr.port()))?
}

/// What the broker's process spent on the Kafka gateway's passes, when it runs here.
struct BrokerCpu {
    pid: u32,
    /// Its command name, so a reader sees which process was measured.
    name: String,
    /// CPU a call during the concurrent pass, in microseconds.
    loaded_us: f64,
    /// Cores busy during it.
    loaded_share: f64,
    /// Cores busy with the gateway attached and idle.
    idle_share: f64,
}

/// How long the broker's CPU is watched with the gateway idle.
const BROKER_IDLE_WINDOW: Duration = Duration::from_secs(5);

struct Pass {
    label: String,
    requests: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

async fn pass(
    label: &str,
    http: &reqwest::Client,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> Pass {
    let started = Instant::now();
    let per = requests / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut errors = 0;
            for _ in 0..per {
                let t = Instant::now();
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        all.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = all.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    Pass {
        label: label.to_owned(),
        requests: ms.len(),
        seconds,
        p50_ms: polls::percentile(&ms, 0.50),
        p99_ms: polls::percentile(&ms, 0.99),
        errors,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (requests, concurrency, kafka) = match cli.bench {
        Bench::Passthrough {
            requests,
            concurrency,
            kafka,
        } => (requests, concurrency, kafka),
        Bench::Files {
            bin,
            size,
            rounds,
            concurrency,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(files::run(bin, size, rounds, concurrency));
        }
        Bench::Uploads {
            bin,
            big_mib,
            dedupe_mib,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(uploads::run(bin, big_mib, dedupe_mib));
        }
        Bench::Proxy {
            bin,
            seconds,
            connections,
            rounds,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(proxy::run(bin, seconds, connections, rounds.max(1)));
        }
        Bench::Pair {
            a,
            b,
            a_env,
            b_env,
            seconds,
            connections,
            rounds,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(pair::run(
                    a,
                    b,
                    a_env,
                    b_env,
                    seconds,
                    connections,
                    rounds.max(1),
                ));
        }
        Bench::Instructions {
            a,
            b,
            a_env,
            b_env,
            seconds,
            connections,
        } => {
            let with_log = |pairs: Vec<String>| -> anyhow::Result<Vec<(String, String)>> {
                let mut env = pair::env(&pairs)?;
                if env.iter().all(|(k, _)| k != "TELEPIPE_LOG") {
                    env.insert(0, ("TELEPIPE_LOG".to_owned(), "info".to_owned()));
                }
                Ok(env)
            };
            let mut builds = vec![(a.clone(), with_log(a_env)?)];
            if b.is_some() || !b_env.is_empty() {
                builds.push((b.unwrap_or(a), with_log(b_env)?));
            }
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(instructions::run(builds, seconds, connections));
        }
        Bench::Soak {
            bin,
            seconds,
            window,
            connections,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(soak::run(bin, seconds, window.max(1), connections));
        }
        Bench::Floor {
            kafka,
            rounds,
            in_flight,
            windows,
        } => {
            let f = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(floor::ping_pong(&kafka, rounds, in_flight, windows))?;
            println!("{f}");
            return Ok(());
        }
        Bench::Flood {
            bin,
            messages,
            in_flight,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(flood::run(bin, messages, in_flight));
        }
        Bench::Polls {
            bin,
            polls,
            rate,
            seconds,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(polls::run(bin, polls, rate.max(1), seconds.max(1)));
        }
        Bench::BareProxy { upstream_port } => {
            // As many workers as cores, as the gateway's runtime has.
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(bare::serve(upstream_port));
        }
        Bench::UrlServer => {
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let url = uploads::url_server().await?;
                    println!("url server listening on {url}");
                    std::future::pending::<anyhow::Result<()>>().await
                });
        }
        Bench::Stages {
            bin,
            kafka,
            uploads,
            mib,
            rate,
            seconds,
            sandbox_nice,
            files_nice,
            rounds,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(stages::run(
                    bin,
                    kafka,
                    uploads,
                    mib.max(51),
                    stages::Windows {
                        rate: rate.max(1),
                        seconds: seconds.max(1),
                        rounds: rounds.max(1),
                    },
                    sandbox_nice.min(19),
                    files_nice.min(19),
                ));
        }
        Bench::Record {
            bin,
            calls,
            replay_calls,
        } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(record::run(bin, calls, replay_calls.max(8)));
        }
        Bench::Webhooks { bin, bots, per_bot } => {
            return tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(webhooks::run(bin, bots, per_bot));
        }
    };
    let dir = std::env::temp_dir().join(format!("telepipe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let shutdown = CancellationToken::new();

    let sb_dir = dir.join("sandbox");
    let sd = shutdown.clone();
    let sandbox = spawn_server("sandbox", move |ready| async move {
        telepipe::sandbox(
            sandbox_args(&[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &sb_dir.display().to_string(),
            ])?,
            sd,
            Some(ready),
        )
        .await
    })?;
    let gateway = |name: &str, bus: String, prefix: String| -> anyhow::Result<SocketAddr> {
        let data_dir = dir.join(name);
        let sd = shutdown.clone();
        let upstream = format!("http://{sandbox}");
        let instance = name.to_owned();
        spawn_server(name, move |ready| async move {
            telepipe::serve(
                serve_args(&[
                    "--listen",
                    "127.0.0.1:0",
                    "--upstream",
                    &upstream,
                    "--data-dir",
                    &data_dir.display().to_string(),
                    "--per-bot-concurrency",
                    "64",
                    "--bus",
                    &bus,
                    "--kafka-prefix",
                    &prefix,
                    "--kafka-session-timeout-ms",
                    "2000",
                    "--instance",
                    &instance,
                    "--drain-timeout",
                    "5",
                ])?,
                sd,
                Some(ready),
            )
            .await
        })
    };
    let embedded = gateway("embedded", "memory".into(), "telepipe.".into())?;
    let on_kafka = match &kafka {
        Some(b) => Some(gateway(
            "kafka",
            format!("kafka://{b}"),
            format!("bench{}.", std::process::id()),
        )?),
        None => None,
    };

    // What the broker spends is half of item 4's question (what is the broker's, what is
    // telepipe's); /proc shows it when the broker is a process of this machine.
    let broker = kafka.as_deref().and_then(local_broker_pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency * 2)
            .build()?;
        let token = sandbox::token_for(123_456);
        let path = format!("/bot{token}/sendMessage?chat_id=1&text=bench");
        let mut targets = vec![
            ("direct".to_owned(), format!("http://{sandbox}{path}")),
            ("embedded".to_owned(), format!("http://{embedded}{path}")),
        ];
        if let Some(k) = on_kafka {
            targets.push(("kafka".to_owned(), format!("http://{k}{path}")));
        }
        // Warm up connections, caches and (on Kafka) group joins on every path.
        for (_, url) in &targets {
            pass("warm-up", &http, url, 1000, concurrency).await;
        }
        let seq = (requests / 10).max(100);
        let mut out = Vec::new();
        for (name, url) in &targets {
            out.push(pass(&format!("{name}, 1 client"), &http, url, seq, 1).await);
        }
        let broker_ticks = || broker.map(|pid| cpu::ticks(&format!("/proc/{pid}/stat")).total());
        let mut broker_cpu = None;
        for (name, url) in &targets {
            let label = format!("{name}, {concurrency} clients");
            let before = broker_ticks();
            let p = pass(&label, &http, url, requests, concurrency).await;
            if let (Some(pid), Some(b), Some(a), "kafka") =
                (broker, before, broker_ticks(), name.as_str())
            {
                broker_cpu = Some(BrokerCpu {
                    pid,
                    name: cpu::name(pid),
                    loaded_us: cpu::us_per_call(a.saturating_sub(b), p.requests as u64),
                    loaded_share: cpu::cores(a.saturating_sub(b), p.seconds),
                    idle_share: 0.0,
                });
            }
            out.push(p);
        }
        if let (Some(cpu), Some(before)) = (broker_cpu.as_mut(), broker_ticks()) {
            // The gateway on Kafka attached and idle: what its consumers' polls cost the broker.
            tokio::time::sleep(BROKER_IDLE_WINDOW).await;
            let spent = broker_ticks().unwrap_or(before).saturating_sub(before);
            cpu.idle_share = cpu::cores(spent, BROKER_IDLE_WINDOW.as_secs_f64());
        }
        let floor = match &kafka {
            Some(b) => Some((
                floor::ping_pong(b, 1000, 1, 1).await?,
                floor::ping_pong(b, requests, concurrency, 1).await?,
            )),
            None => None,
        };
        Ok::<_, anyhow::Error>((out, floor, broker_cpu))
    })?;
    let (results, floor, broker_cpu) = results;
    shutdown.cancel();

    println!(
        "passthrough: sendMessage, direct to the sandbox vs through telepipe serve, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<24} {:>9} {:>10} {:>9} {:>9} {:>7}",
        "pass", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for p in &results {
        println!(
            "{:<24} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>7}",
            p.label,
            p.requests,
            p.requests as f64 / p.seconds,
            p.p50_ms,
            p.p99_ms,
            p.errors
        );
    }
    let paths = results.len() / 2;
    let rate = |p: &Pass| p.requests as f64 / p.seconds;
    for i in 1..paths {
        let (seq, conc) = (&results[i], &results[paths + i]);
        println!(
            "{}: {:.2}x direct throughput (1 client), {:.2}x ({} clients); added p50 {:.3} ms (1 client), {:.3} ms ({} clients)",
            seq.label.split(',').next().unwrap_or(""),
            rate(seq) / rate(&results[0]),
            rate(conc) / rate(&results[paths]),
            concurrency,
            seq.p50_ms - results[0].p50_ms,
            conc.p50_ms - results[paths].p50_ms,
            concurrency,
        );
    }
    if let Some((f, ceiling)) = floor {
        let (embedded, kafka) = (&results[paths + 1], &results[paths + 2]);
        let added = kafka.p50_ms - results[paths].p50_ms;
        let added_1 = results[2].p50_ms - results[0].p50_ms;
        println!("floor: {f}");
        println!("ceiling: {ceiling}");
        println!(
            "kafka: {:.2}x embedded throughput ({concurrency} clients), {:.2}x the broker's ceiling; added p50 {added_1:.3} ms (1 client) = {:.2}x the ping-pong, {added:.3} ms ({concurrency} clients)",
            rate(kafka) / rate(embedded),
            rate(kafka) / ceiling.per_second,
            added_1 / f.p50_ms,
        );
        if let Some(cpu) = broker_cpu {
            println!(
                "broker CPU (pid {}, {}): {:.0} us a call ({:.0}% of a core) at {concurrency} clients; {:.0}% of a core with the gateway idle",
                cpu.pid,
                cpu.name,
                cpu.loaded_us,
                cpu.loaded_share * 100.0,
                cpu.idle_share * 100.0,
            );
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `telepipe serve` flags, parsed as the binary parses them (defaults included).
pub fn serve_args(flags: &[&str]) -> anyhow::Result<telepipe::config::ServeArgs> {
    use clap::Parser;
    let mut argv = vec!["telepipe", "serve"];
    argv.extend_from_slice(flags);
    match telepipe::config::Cli::try_parse_from(argv)?.command {
        telepipe::config::Command::Serve(a) => Ok(a),
        _ => unreachable!("parsed as serve"),
    }
}

/// `telepipe sandbox` flags, parsed as the binary parses them.
pub fn sandbox_args(flags: &[&str]) -> anyhow::Result<telepipe::config::SandboxArgs> {
    use clap::Parser;
    let mut argv = vec!["telepipe", "sandbox"];
    argv.extend_from_slice(flags);
    match telepipe::config::Cli::try_parse_from(argv)?.command {
        telepipe::config::Command::Sandbox(a) => Ok(a),
        _ => unreachable!("parsed as sandbox"),
    }
}
