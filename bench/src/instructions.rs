//! `instructions`: the instructions a sendMessage costs the gateway, counted by callgrind
//! (valgrind) over every thread of `telepipe serve` (embedded, every call recorded) while wrk
//! loads it through one nginx upstream. Unlike req/s and CPU time, a count does not move with
//! the shared machine's speed, so a change of a few percent in the gateway's own work shows
//! in one run. It does not see the kernel's share (the sockets, the SQLite file), which
//! `pair` does.

use crate::files::{start, stop, Server};
use crate::nginx;
use crate::proxy::{call_path, serve_args};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// `callgrind_control <what> <pid>`: `-z` zeroes the counts, `-d` dumps them to a new file.
/// Bounded: where ptrace is restricted, vgdb waits for the gateway to wake by itself.
async fn control(what: &str, pid: u32) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        Command::new("callgrind_control")
            .args([what, &pid.to_string()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("callgrind_control {what} did not answer within 30 s"))?
    .context("callgrind_control (Debian: apt-get install valgrind)")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `summary:` count of a callgrind dump: its instructions since the counts were zeroed.
pub fn summary(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The dump `callgrind_control -d` wrote: the file after the `base` one, `base.1`.
async fn read_dump(base: &Path) -> anyhow::Result<u64> {
    let first = PathBuf::from(format!("{}.1", base.display()));
    for _ in 0..100 {
        if let Some(n) = std::fs::read_to_string(&first)
            .ok()
            .as_deref()
            .and_then(summary)
        {
            return Ok(n);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("no callgrind dump at {}", first.display())
}

/// One build's count: instructions per call over `seconds` of wrk after a warm-up.
async fn count(
    bin: &Path,
    dir: &Path,
    upstream_port: u16,
    env: &[(String, String)],
    seconds: u64,
    connections: usize,
) -> anyhow::Result<(u64, u64)> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join("callgrind.out");
    let mut args = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        format!("--log-file={}", dir.join("valgrind.log").display()),
        bin.display().to_string(),
    ];
    args.extend(serve_args(&dir.join("gateway"), upstream_port));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gw: Server = start(Path::new("valgrind"), &args, env)
        .await
        .context("valgrind (Debian: apt-get install valgrind)")?;
    let pid = gw.child.id().context("the gateway has exited")?;
    let url = format!("{}{}", gw.url, call_path());
    // Connections, the pool, the writer's statements and the allocator's pages made first.
    nginx::wrk(&url, connections, 3).await?;
    control("-z", pid).await?;
    let load = nginx::wrk(&url, connections, seconds).await?;
    control("-d", pid).await?;
    let instructions = read_dump(&out).await?;
    stop(&mut gw).await?;
    if load.errors > 0 {
        bail!("{} of the calls failed", load.errors);
    }
    Ok((instructions, load.requests))
}

pub async fn run(
    builds: Vec<(PathBuf, Vec<(String, String)>)>,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "telepipe-bench-instructions-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let counted = count_all(&dir, &builds, seconds, connections).await;
    // Everything under it (the gateways' data, the dumps) goes, whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    counted
}

async fn count_all(
    dir: &Path,
    builds: &[(PathBuf, Vec<(String, String)>)],
    seconds: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let up = nginx::upstream(dir).await?;
    println!(
        "instructions: sendMessage through `telepipe serve` under callgrind, wrk -t2 \
         -c{connections}, {seconds} s after a 3 s warm-up; every thread of the gateway counted"
    );
    println!(
        "  {:>8} {:>15} {:>12}  build",
        "calls", "instructions", "per call"
    );
    let mut first = None;
    for (i, (bin, env)) in builds.iter().enumerate() {
        let (n, calls) = count(
            bin,
            &dir.join(i.to_string()),
            up.port,
            env,
            seconds,
            connections,
        )
        .await?;
        let per_call = n as f64 / calls.max(1) as f64;
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let against = match first {
            Some(f) => format!(" ({:.3}x the first)", per_call / f),
            None => String::new(),
        };
        first.get_or_insert(per_call);
        println!(
            "  {calls:>8} {n:>15} {per_call:>12.0}  {} {}{against}",
            bin.display(),
            vars.join(" ")
        );
    }
    // Stopped before its folder is removed.
    up.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_dumps_summary() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 972870827\n\
                    fn=main\n1 2\ntotals: 973142657\n";
        assert_eq!(super::summary(dump), Some(972_870_827));
        assert_eq!(super::summary("events: Ir\n"), None);
    }
}
