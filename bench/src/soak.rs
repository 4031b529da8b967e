//! `soak`: the hot path held at full rate for a long time. `telepipe serve` (embedded, SQLite)
//! forwards sendMessage to nginx's fixed answer while wrk loads it window after window; after
//! each window: req/s, p99, the data folder, the database and its WAL, disk bytes per recorded
//! call, the gateway's RSS, and the upstream's own rate in a short probe (the machine's speed
//! at the time). Whatever grows without bound shows here, however fast the first minute was.

use crate::files::{proc_kb, stop};
use crate::nginx;
use crate::proxy::{audit_rows, call_path, gateway};
use anyhow::Context;
use std::path::{Path, PathBuf};

pub(crate) fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            // Allocated blocks, not the apparent length: the disk a host pays for.
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

fn file_bytes(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

const MB: f64 = 1024.0 * 1024.0;

struct Window {
    end_s: u64,
    load: nginx::Load,
    data: u64,
    db: u64,
    wal: u64,
    rss_kb: u64,
    calls: u64,
    /// The upstream alone, loaded for 2 s right after the window: how fast the machine was
    /// then (a shared VM's speed drifts by tens of percent over minutes).
    machine_rps: f64,
}

/// Requests-weighted req/s and the worst p99 of the windows ending within `range` seconds.
fn span(ws: &[&Window]) -> (f64, f64) {
    let reqs: u64 = ws.iter().map(|w| w.load.requests).sum();
    let secs: f64 = ws.iter().map(|w| w.load.seconds).sum();
    let p99 = ws.iter().map(|w| w.load.p99_ms).fold(0.0, f64::max);
    (reqs as f64 / secs.max(1e-9), p99)
}

/// telepipe's req/s over the upstream's own in the same windows: the gateway's drift with the
/// machine's taken out.
fn relative(ws: &[&Window]) -> f64 {
    ws.iter().map(|w| w.load.rps / w.machine_rps).sum::<f64>() / ws.len().max(1) as f64
}

pub async fn run(
    bin: PathBuf,
    seconds: u64,
    window: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up = nginx::upstream(&dir).await?;
    let data = dir.join("gateway");
    let mut gw = gateway(&bin, &data, up.port, &[], &[]).await?;
    let pid = gw.child.id().context("gateway pid")?;
    let url = format!("{}{}", gw.url, call_path());
    let direct = format!("http://127.0.0.1:{}{}", up.port, call_path());

    let warm = nginx::wrk(&url, connections, 2).await?;
    let base = dir_bytes(&data);
    let base_rss = proc_kb(pid, "VmRSS");
    println!(
        "soak: sendMessage through telepipe serve (embedded, SQLite), wrk -t2 -c{connections}, \
         {seconds} s in {window} s windows; after warm-up: data {:.1} MB, RSS {:.1} MB",
        base as f64 / MB,
        base_rss as f64 / 1024.0
    );
    println!(
        "  {:>6} {:>9} {:>8} {:>9} {:>8} {:>8} {:>10} {:>8} {:>12}",
        "t s", "req/s", "p99 ms", "data MB", "db MB", "WAL MB", "B/call", "RSS MB", "upstream r/s"
    );
    let mut windows: Vec<Window> = Vec::new();
    let mut calls = 0;
    let mut t = 0;
    let mut max_wal = 0;
    while t < seconds {
        let len = window.min(seconds - t);
        let load = nginx::wrk(&url, connections, len).await?;
        t += len;
        calls += load.requests;
        let machine_rps = nginx::wrk(&direct, connections, 2).await?.rps;
        let w = Window {
            end_s: t,
            data: dir_bytes(&data),
            db: file_bytes(&data.join("store.db")),
            wal: file_bytes(&data.join("store.db-wal")),
            rss_kb: proc_kb(pid, "VmRSS"),
            calls,
            load,
            machine_rps,
        };
        max_wal = max_wal.max(w.wal);
        println!(
            "  {:>6} {:>9.0} {:>8.2} {:>9.1} {:>8.1} {:>8.1} {:>10.0} {:>8.1} {:>12.0}",
            w.end_s,
            w.load.rps,
            w.load.p99_ms,
            w.data as f64 / MB,
            w.db as f64 / MB,
            w.wal as f64 / MB,
            w.data.saturating_sub(base) as f64 / w.calls.max(1) as f64,
            w.rss_kb as f64 / 1024.0,
            w.machine_rps
        );
        windows.push(w);
    }
    let Some(last) = windows.last() else {
        anyhow::bail!("--seconds must be positive");
    };
    // The first and the last minute (or window, when windows are longer).
    let minute = 60.max(window);
    let first: Vec<&Window> = windows.iter().filter(|w| w.end_s <= minute).collect();
    let end: Vec<&Window> = windows
        .iter()
        .filter(|w| w.end_s + minute > last.end_s)
        .collect();
    let (first_rps, first_p99) = span(if first.is_empty() { &end } else { &first });
    let (last_rps, last_p99) = span(&end);
    let first_rss = windows[0].rss_kb;
    let (first_rel, last_rel) = (
        relative(if first.is_empty() { &end } else { &first }),
        relative(&end),
    );
    println!(
        "  req/s: first minute {first_rps:.0}, last minute {last_rps:.0} ({:+.1}%); p99: {first_p99:.2} ms, {last_p99:.2} ms",
        (last_rps / first_rps - 1.0) * 100.0
    );
    println!(
        "  req/s over the upstream's own after each window: first minute {first_rel:.3}, last minute {last_rel:.3} ({:+.1}%)",
        (last_rel / first_rel - 1.0) * 100.0
    );
    println!(
        "  RSS: {:.1} MB after the first window, {:.1} MB at the end ({:+.1} MB); largest WAL \
         seen {:.1} MB; disk per call {:.0} B over {} calls",
        first_rss as f64 / 1024.0,
        last.rss_kb as f64 / 1024.0,
        (last.rss_kb as f64 - first_rss as f64) / 1024.0,
        max_wal as f64 / MB,
        last.data.saturating_sub(base) as f64 / last.calls.max(1) as f64,
        last.calls
    );
    stop(&mut gw).await?;
    let rows = audit_rows(&data)?;
    println!(
        "  recorded: {rows} audit rows for {} answers wrk counted (warm-up included)",
        calls + warm.requests
    );
    println!(
        "  after stopping: data {:.1} MB, WAL {:.1} MB",
        dir_bytes(&data) as f64 / MB,
        file_bytes(&data.join("store.db-wal")) as f64 / MB
    );
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
