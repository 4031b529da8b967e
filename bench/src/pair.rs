//! `pair`: two gateway builds side by side on one nginx upstream, wrk runs alternating between
//! them. Per run: req/s, p50, p99, the gateway's CPU per call (and its SQLite writer thread's
//! share of it), and how idle the whole machine was. This machine's speed moves by ±20% within
//! minutes, so a change is measured against the code before it in alternating runs, never
//! against an earlier run of the other bench.

use crate::cpu;
use crate::files::{stop, Server};
use crate::nginx::{self, Load};
use crate::proxy::{call_path, gateway, median_of};
use anyhow::Context;
use std::path::PathBuf;

/// A gateway's CPU time and its writer thread's, in ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let all = cpu::ticks(&format!("/proc/{pid}/stat")).total();
    let writer = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "sqlite-writer")
        })
        .map(|t| cpu::ticks(&t.path().join("stat").display().to_string()).total())
        .sum();
    (all, writer)
}

/// The machine's (idle, total) CPU time from `/proc/stat`, in ticks.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (f.get(3).copied().unwrap_or(0), f.iter().sum())
}

/// One wrk run against one gateway, with what it cost.
struct Run {
    load: Load,
    cpu_us: f64,
    writer_us: f64,
    idle: f64,
}

async fn measure(gw: &Server, url: &str, connections: usize, seconds: u64) -> anyhow::Result<Run> {
    let pid = gw.child.id().context("the gateway has exited")?;
    let (cpu0, writer0) = cpu_ticks(pid);
    let (idle0, total0) = machine_ticks();
    let load = nginx::wrk(url, connections, seconds).await?;
    let (cpu1, writer1) = cpu_ticks(pid);
    let (idle1, total1) = machine_ticks();
    let per_call = |ticks: u64| cpu::us_per_call(ticks, load.requests);
    Ok(Run {
        cpu_us: per_call(cpu1.saturating_sub(cpu0)),
        writer_us: per_call(writer1.saturating_sub(writer0)),
        idle: idle1.saturating_sub(idle0) as f64 / total1.saturating_sub(total0).max(1) as f64,
        load,
    })
}

fn row(label: &str, r: &Run) {
    println!(
        "  {label:<6} {:>9.0} {:>9.3} {:>9.3} {:>10.1} {:>10.1} {:>6.0}% {:>7}",
        r.load.rps,
        r.load.p50_ms,
        r.load.p99_ms,
        r.cpu_us,
        r.writer_us,
        r.idle * 100.0,
        r.load.errors
    );
}

/// `KEY=VALUE` pairs for a gateway's environment.
pub(crate) fn env(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{p:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Waits for a first 200 from `url`: a gateway on Kafka (`--a-env TELEPIPE_BUS=kafka://...`)
/// answers once its groups have joined, seconds after it listens, and a warm-up before that
/// counted no request.
async fn first_answer(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let sent = http
            .get(url)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no answer within two minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn run(
    a: PathBuf,
    b: PathBuf,
    a_env: Vec<String>,
    b_env: Vec<String>,
    seconds: u64,
    connections: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-pair-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up = nginx::upstream(&dir).await?;
    let mut gws = Vec::new();
    for (name, bin, vars) in [("a", &a, &a_env), ("b", &b, &b_env)] {
        let gw = gateway(bin, &dir.join(name), up.port, &[], &env(vars)?).await?;
        gws.push((name, gw));
    }
    let path = call_path();
    for (name, gw) in &gws {
        let url = format!("{}{path}", gw.url);
        first_answer(&url)
            .await
            .with_context(|| format!("gateway {name}"))?;
        nginx::wrk(&url, connections, 2).await?;
    }
    println!(
        "pair: sendMessage, wrk -t2 -c{connections}, {seconds} s a run, a and b in turns on one \
         nginx upstream\n  a: {} {}\n  b: {} {}",
        a.display(),
        a_env.join(" "),
        b.display(),
        b_env.join(" ")
    );
    println!(
        "  {:<6} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7}",
        "run", "req/s", "p50 ms", "p99 ms", "cpu µs/call", "writer µs", "idle", "errors"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let mut rps = Vec::new();
        for (name, gw) in &gws {
            let r = measure(gw, &format!("{}{path}", gw.url), connections, seconds).await?;
            row(&format!("{name} #{round}"), &r);
            rps.push(r.load.rps);
        }
        ratios.push(rps[1] / rps[0].max(1.0));
    }
    println!("  b / a req/s: {}", median_of(&mut ratios));
    for (_, mut gw) in gws {
        stop(&mut gw).await?;
    }
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
