//! `stages`: what a long upload costs everyone else. On Kafka, the ingest and the processing
//! stages run as separate processes of the release binary, in two topologies: the router and
//! the file stages apart (`processor router updates` + `processor files media send`), and together
//! (`processor all`). In each, another bot's sendMessage at a steady rate is timed while idle
//! and again while four big URL uploads (past the Bot API's 50 MB, so over MTProto) run; the
//! figure is the loaded p99 over the idle p99 (issue 12: within 1.5x when apart). Apart, the
//! files stage runs under `nice -n 10`: on one machine that is what stands in for the machines
//! of its own it would have.
//!
//! The URL server (the internet's hosts the uploads come from) is a process of its own under
//! `nice -n 10` too: in this process it shared the load generator's runtime, so streaming
//! 800 MB delayed the very timer that measures sendMessage. The sandbox is Telegram, for the
//! uploads (taking in and decrypting 800 MB over MTProto) and for the measured sendMessage
//! alike, in one process: `--sandbox-nice` (default 10) runs it under `nice` as another
//! party's machine; `--sandbox-nice 0` shares the two cores with it evenly, as the figures
//! before 2026-12-02 evening did.

use crate::files::{start, start_sandbox_niced, Server};
use crate::polls::{percentile, samples};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The processes of one topology: the ingest first, then each processor's stage list.
const TOPOLOGIES: [(&str, &[&[&str]]); 2] = [
    (
        "apart",
        &[&["router", "updates"], &["files", "media", "send"]],
    ),
    ("together", &[&["all"]]),
];

struct Gateway {
    /// The ingest (bots call it), then the processors.
    procs: Vec<Server>,
}

impl Gateway {
    fn url(&self) -> &str {
        &self.procs[0].url
    }
}

async fn gateway(
    bin: &Path,
    dir: &Path,
    env: &[(String, String)],
    kafka: &str,
    name: &str,
    processors: &[&[&str]],
) -> anyhow::Result<Gateway> {
    let data = dir.join(name).display().to_string();
    let bus = format!("kafka://{kafka}");
    let prefix = format!("bench{}{name}.", std::process::id());
    // A bench's own key: the processes must share one, nothing else needs it secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("{nanos:032x}{:032x}", std::process::id());
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--bus",
        &bus,
        "--kafka-prefix",
        &prefix,
        "--kafka-session-timeout-ms",
        "6000",
        "--seal-key",
        &key,
        "--allow-url-networks",
        "127.0.0.2/32",
    ];
    let mut procs = Vec::new();
    let bin_arg = bin.display().to_string();
    for stages in processors {
        // Apart, the files stage would have machines of its own; on one machine, `nice` is
        // what an operator has to keep it from taking the router's CPU.
        let mut args = if stages.contains(&"files") && processors.len() > 1 {
            vec!["-n", "10", &bin_arg, "processor"]
        } else {
            vec!["-n", "0", &bin_arg, "processor"]
        };
        args.extend_from_slice(stages);
        args.extend_from_slice(&common);
        procs.push(start(Path::new("nice"), &args, env).await?);
    }
    let mut args = vec!["ingest", "--instance", "ingest-1"];
    args.extend_from_slice(&common);
    procs.insert(0, start(bin, &args, env).await?);
    Ok(Gateway { procs })
}

/// The URL server (`/<mib>/<seed>`, pseudo-random content streamed): this binary's hidden
/// `url-server`, under `nice -n 10`.
async fn url_server() -> anyhow::Result<Server> {
    let me = std::env::current_exe()?.display().to_string();
    start(Path::new("nice"), &["-n", "10", &me, "url-server"], &[]).await
}

/// The settings the sandbox wrote for a gateway, as `KEY=value` pairs.
fn sandbox_env(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

async fn upload(
    url: String,
    files: String,
    token: String,
    mib: u64,
    seed: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let v: Value = reqwest::Client::new()
        .post(format!("{url}/bot{token}/sendDocument"))
        .json(&json!({"chat_id": 5, "document": format!("{files}/{mib}/{seed}")}))
        .send()
        .await?
        .json()
        .await?;
    if v["ok"] != true || v["result"]["document"]["file_size"] != mib << 20 {
        bail!("upload failed: {v}");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// One line of the table (without the sandbox's column): p50 and p99 idle and loaded, their
/// ratio, how long the uploads took. Returns the ratio of the p99s.
fn row(label: &str, idle: &[f64], loaded: &[f64], took: Option<f64>) -> f64 {
    let (idle_p99, loaded_p99) = (percentile(idle, 0.99), percentile(loaded, 0.99));
    let took = took.map_or_else(String::new, |t| format!("{t:.1} s"));
    print!(
        "  {label:<12} {:>8.2}ms {idle_p99:>8.2}ms {:>10.2}ms {loaded_p99:>10.2}ms {:>7.2}x {took:>14}",
        percentile(idle, 0.50),
        percentile(loaded, 0.50),
        loaded_p99 / idle_p99
    );
    loaded_p99 / idle_p99
}

/// The timed sendMessage: its rate, each window's length, the rounds a topology.
pub struct Windows {
    pub rate: u64,
    pub seconds: u64,
    pub rounds: usize,
}

pub async fn run(
    bin: PathBuf,
    kafka: String,
    uploads: usize,
    mib: u64,
    windows: Windows,
    sandbox_nice: u8,
) -> anyhow::Result<()> {
    let Windows {
        rate,
        seconds,
        rounds,
    } = windows;
    let dir = std::env::temp_dir().join(format!("telepipe-bench-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Telegram keeps what it is sent on disks of its own: the sandbox's 1.6 GB go to memory
    // where there is a tmpfs, else beside the gateway's data (and then every fsync of the
    // gateway's store waits for them to reach the disk).
    let shm = Path::new("/dev/shm");
    let telegram_dir = if shm.is_dir() {
        shm.join(format!("telepipe-bench-stages-{}", std::process::id()))
    } else {
        dir.join("telegram")
    };
    std::fs::create_dir_all(&telegram_dir)?;
    let sandbox = start_sandbox_niced(&bin, &telegram_dir, sandbox_nice).await?;
    let env = sandbox_env(&telegram_dir.join("sandbox.env"))?;
    let url_host = url_server().await?;
    let files = url_host.url.clone();
    println!(
        "stages on Kafka ({kafka}): sendMessage of another bot at {rate}/s for {seconds} s, idle \
         and while {uploads} URL uploads of {mib} MiB run (MTProto), {rounds} round(s) a topology"
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>12} {:>12} {:>8} {:>14} {:>22}",
        "topology",
        "idle p50",
        "idle p99",
        "loaded p50",
        "loaded p99",
        "p99 x",
        "uploads took",
        "sandbox p99 idle/load"
    );
    let mut seed = 100;
    for (name, processors) in TOPOLOGIES {
        // Every round's samples, pooled: a p99 of 1,000 samples is their tenth-worst, and
        // one round's ratio moved ±0.3 from run to run on this machine.
        let (mut idle_all, mut loaded_all, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            // A gateway of its own each round, on topics of its own: Tansu's round trip grows
            // with what a topic holds (`telepipe-bench floor --windows`: p50 6.8 ms over its
            // first 500 pings, 14.2 ms over its sixth), so rounds on one set of topics drift
            // apart by the broker alone (idle p50 15, 37, 55 ms in three rounds).
            let run = format!("{name}{round}");
            let gw = gateway(&bin, &dir, &env, &kafka, &run, processors)
                .await
                .with_context(|| format!("starting the {name} topology"))?;
            let uploader = sandbox::token_for(5151);
            let sender = format!("{}/bot{}", gw.url(), sandbox::token_for(5252));
            // Warm-up: group joins, connections, the MTProto sign-in of the uploading bot.
            crate::polls::load(&sender, 20, 2).await?;
            seed += 1;
            upload(
                gw.url().to_owned(),
                files.clone(),
                uploader.clone(),
                51,
                seed,
            )
            .await?;
            // The floor: a third bot's sendMessage straight to the sandbox at the same rate, in
            // the same windows: what Telegram's stand-in itself takes, idle and loaded.
            let direct = format!("{}/bot{}", sandbox.url, sandbox::token_for(5353));
            let idle_window = || async {
                tokio::try_join!(
                    samples(&sender, rate, seconds),
                    samples(&direct, rate, seconds)
                )
            };
            // The topics fill as the windows run, so which window comes first alternates
            // round by round: neither gets the emptier topics every time.
            let idle_first = round % 2 == 1;
            let early = if idle_first {
                Some(idle_window().await?)
            } else {
                None
            };
            let started = Instant::now();
            let running: Vec<_> = (0..uploads)
                .map(|_| {
                    seed += 1;
                    tokio::spawn(upload(
                        gw.url().to_owned(),
                        files.clone(),
                        uploader.clone(),
                        mib,
                        seed,
                    ))
                })
                .collect();
            let ((loaded, failed), (direct_loaded, _)) = tokio::try_join!(
                samples(&sender, rate, seconds),
                samples(&direct, rate, seconds)
            )?;
            let window = started.elapsed().as_secs_f64();
            for r in running {
                r.await??;
            }
            let took = started.elapsed().as_secs_f64();
            let ((idle, idle_failed), (direct_idle, _)) = match early {
                Some(done) => done,
                None => idle_window().await?,
            };
            let label = if rounds > 1 {
                format!("{name} {round}{}", if idle_first { "" } else { "*" })
            } else {
                name.to_owned()
            };
            let ratio = row(&label, &idle, &loaded, Some(took));
            println!(
                "{:>22}/{:.2}ms",
                format!("{:.2}", percentile(&direct_idle, 0.99)),
                percentile(&direct_loaded, 0.99)
            );
            ratios.push(ratio);
            if idle_failed + failed > 0 {
                println!("    {} sendMessage failed", idle_failed + failed);
            }
            if took < window {
                println!("    the uploads ended before the loaded window did: raise --mib");
            }
            idle_all.extend(idle);
            loaded_all.extend(loaded);
            drop(gw);
            // 4 x 200 MiB of blobs a round: gone before the next round writes its own.
            let _ = std::fs::remove_dir_all(dir.join(&run));
        }
        if rounds > 1 {
            idle_all.sort_by(f64::total_cmp);
            loaded_all.sort_by(f64::total_cmp);
            row(&format!("{name} pooled"), &idle_all, &loaded_all, None);
            println!();
            println!(
                "    {name}: loaded / idle p99 by round {}  (*: loaded window first)",
                crate::proxy::median_of(&mut ratios)
            );
        }
    }
    drop((sandbox, url_host));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&telegram_dir);
    Ok(())
}
