//! `stages`: what a long upload costs everyone else. On Kafka, the ingest and the processing
//! stages run as separate processes of the release binary, in two topologies: the router and
//! the file stages apart (`processor router updates` + `processor files media send`), and together
//! (`processor all`). In each, another bot's sendMessage at a steady rate is timed while idle
//! and again while four big URL uploads (past the Bot API's 50 MB, so over MTProto) run; the
//! figure is the loaded p99 over the idle p99 (issue 12: within 1.5x when apart). Apart, the
//! files stage runs under `nice -n 19` (`--files-nice`): on one machine that is what stands in
//! for the machines of its own it would have. Every window runs on a gateway and topics of its
//! own: on Tansu, a second window on the same topics is slower by the broker alone.
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

async fn gateway(b: &Bench<'_>, name: &str, processors: &[&[&str]]) -> anyhow::Result<Gateway> {
    let Bench {
        bin,
        dir,
        env,
        kafka,
        ..
    } = *b;
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
    let files_nice = b.files_nice.to_string();
    for stages in processors {
        // Apart, the files stage would have machines of its own; on one machine, `nice` is
        // what an operator has to keep it from taking the router's CPU. At 19 the uploads
        // took as long as at 10 (11.7-12.8 s against 11.4-12.3 s): they use the CPU the
        // router leaves, and the router gets it back as soon as it wakes.
        let mut args = if stages.contains(&"files") && processors.len() > 1 {
            vec!["-n", &files_nice, &bin_arg, "processor"]
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

/// Folders removed when the bench is done with them, on error too.
struct Removes(Vec<PathBuf>);

impl Drop for Removes {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What every window shares: the processes that outlive gateways, and the load.
struct Bench<'a> {
    bin: &'a Path,
    dir: &'a Path,
    env: &'a [(String, String)],
    kafka: &'a str,
    /// The URL server's base.
    files: &'a str,
    /// Where the sandbox keeps what it is sent (emptied after each window: nothing reads it
    /// back, and 16 windows of uploads would be 7 GiB of `/dev/shm`, that is of memory).
    telegram_files: PathBuf,
    /// A third bot's sendMessage base, straight at the sandbox: the floor.
    direct: String,
    windows: &'a Windows,
    mib: u64,
    /// `nice` of the process running the file stages when apart.
    files_nice: u8,
}

/// One timed window: the gateway's sendMessage latencies (sorted), how many failed, the
/// sandbox's own in the same seconds, and how long the uploads took when there were any.
struct Window {
    ms: Vec<f64>,
    failed: usize,
    direct: Vec<f64>,
    took: Option<f64>,
}

/// A window on a gateway and topics of its own (`run` names both), started the same way
/// whether it will be loaded or not: warm-up sendMessage, then one upload past 50 MB so the
/// uploading bot is signed in over MTProto. Then `uploads` uploads start and sendMessage is
/// timed beside them; the window ends when they are all done.
async fn window(
    b: &Bench<'_>,
    run: &str,
    processors: &[&[&str]],
    uploads: usize,
    seed: &mut u64,
) -> anyhow::Result<Window> {
    // Each window's blobs (4 x 200 MiB when loaded) are gone before the next one writes.
    let _blobs = Removes(vec![b.dir.join(run)]);
    let gw = gateway(b, run, processors)
        .await
        .with_context(|| format!("starting the gateway of {run}"))?;
    let uploader = sandbox::token_for(5151);
    let sender = format!("{}/bot{}", gw.url(), sandbox::token_for(5252));
    crate::polls::load(&sender, 20, 2).await?;
    *seed += 1;
    upload(
        gw.url().to_owned(),
        b.files.to_owned(),
        uploader.clone(),
        51,
        *seed,
    )
    .await?;
    let started = Instant::now();
    let running: Vec<_> = (0..uploads)
        .map(|_| {
            *seed += 1;
            tokio::spawn(upload(
                gw.url().to_owned(),
                b.files.to_owned(),
                uploader.clone(),
                b.mib,
                *seed,
            ))
        })
        .collect();
    let Windows { rate, seconds, .. } = *b.windows;
    let ((ms, failed), (direct, _)) = tokio::try_join!(
        samples(&sender, rate, seconds),
        samples(&b.direct, rate, seconds)
    )?;
    let window = started.elapsed().as_secs_f64();
    for r in running {
        r.await??;
    }
    let took = (uploads > 0).then(|| started.elapsed().as_secs_f64());
    if took.is_some_and(|t| t < window) {
        println!("    the uploads ended before the loaded window did: raise --mib");
    }
    for mut p in gw.procs {
        let _ = p.child.kill().await;
    }
    if let Ok(files) = std::fs::read_dir(&b.telegram_files) {
        for f in files.flatten() {
            let _ = std::fs::remove_file(f.path());
        }
    }
    Ok(Window {
        ms,
        failed,
        direct,
        took,
    })
}

pub async fn run(
    bin: PathBuf,
    kafka: String,
    uploads: usize,
    mib: u64,
    windows: Windows,
    sandbox_nice: u8,
    files_nice: u8,
) -> anyhow::Result<()> {
    let Windows {
        rate,
        seconds,
        rounds,
    } = windows;
    let dir = std::env::temp_dir().join(format!("telepipe-bench-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Telegram keeps what it is sent on disks of its own: the sandbox's ~850 MB a window go
    // to memory where there is a tmpfs, else beside the gateway's data (and then every fsync
    // of the gateway's store waits for them to reach the disk).
    let shm = Path::new("/dev/shm");
    let telegram_dir = if shm.is_dir() {
        shm.join(format!("telepipe-bench-stages-{}", std::process::id()))
    } else {
        dir.join("telegram")
    };
    std::fs::create_dir_all(&telegram_dir)?;
    let _folders = Removes(vec![dir.clone(), telegram_dir.clone()]);
    let sandbox = start_sandbox_niced(&bin, &telegram_dir, sandbox_nice).await?;
    let env = sandbox_env(&telegram_dir.join("sandbox.env"))?;
    let url_host = url_server().await?;
    let bench = Bench {
        bin: &bin,
        dir: &dir,
        env: &env,
        kafka: &kafka,
        files: &url_host.url,
        telegram_files: telegram_dir.join("sandbox").join("files"),
        direct: format!("{}/bot{}", sandbox.url, sandbox::token_for(5353)),
        windows: &windows,
        mib,
        files_nice,
    };
    println!(
        "stages on Kafka ({kafka}): sendMessage of another bot at {rate}/s for {seconds} s, idle \
         and while {uploads} URL uploads of {mib} MiB run (MTProto), {rounds} round(s) a \
         topology, each window on a gateway and topics of its own"
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
            // Tansu's round trip grows with what its topics hold and with time (`floor
            // --windows`: p50 6.8 ms over the first 500 pings, 14.2 ms over the sixth), so two
            // windows on one gateway compare the broker's drift as much as the uploads:
            // `--uploads 0` made the second of two idle windows 1.1-2.8x the first. Each
            // window gets fresh topics and processes; the order still alternates.
            let idle_first = round % 2 == 1;
            // [idle, loaded]
            let mut got: [Option<Window>; 2] = [None, None];
            for loaded in [!idle_first, idle_first] {
                let run = format!("{name}{round}{}", if loaded { "l" } else { "i" });
                let n = if loaded { uploads } else { 0 };
                got[usize::from(loaded)] =
                    Some(window(&bench, &run, processors, n, &mut seed).await?);
            }
            let [Some(idle), Some(loaded)] = got else {
                bail!("a window of round {round} did not run");
            };
            let label = if rounds > 1 {
                format!("{name} {round}{}", if idle_first { "" } else { "*" })
            } else {
                name.to_owned()
            };
            ratios.push(row(&label, &idle.ms, &loaded.ms, loaded.took));
            println!(
                "{:>22}/{:.2}ms",
                format!("{:.2}", percentile(&idle.direct, 0.99)),
                percentile(&loaded.direct, 0.99)
            );
            if idle.failed + loaded.failed > 0 {
                println!("    {} sendMessage failed", idle.failed + loaded.failed);
            }
            idle_all.extend(idle.ms);
            loaded_all.extend(loaded.ms);
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
    Ok(())
}
