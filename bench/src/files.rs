//! `files`: getFile of a big file through the gateway's MTProto path (throughput and the
//! gateway's peak RSS), then token-free downloads of the stored file from `/storage/` against
//! nginx serving the very same blob file.
//!
//! Unlike `passthrough`, the sandbox and the gateway run as separate processes of the release
//! binary (the gateway's VmHWM must be its own).

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts the binary and waits for its `... listening on http://ADDR` line.
pub(crate) async fn start(
    bin: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    // Quiet unless the caller asks for a level (a gateway's default is `info`).
    let quiet = env.iter().all(|(k, _)| k != "TELEPIPE_LOG");
    let mut child = Command::new(bin);
    if quiet {
        child.env("TELEPIPE_LOG", "warn");
    }
    let mut child = child
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.split(" listening on ").nth(1) {
            // Keep draining stdout so the child never blocks on it.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(Server {
                child,
                url: url.trim().to_owned(),
            });
        }
    }
    bail!("{} exited before listening", bin.display())
}

/// Stops a server gracefully (SIGTERM, as an operator would) and waits for it to exit.
pub(crate) async fn stop(s: &mut Server) -> anyhow::Result<()> {
    if let Some(pid) = s.child.id() {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), s.child.wait())
        .await
        .context("the server did not stop within 60 s")??;
    Ok(())
}

/// A `/proc/<pid>/status` figure in kB (`VmHWM`, `VmRSS`).
pub(crate) fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn vm_hwm_kb(pid: u32) -> u64 {
    proc_kb(pid, "VmHWM")
}

/// The sandbox (with `--env-file`) and a gateway pointed at both its faces, as processes of
/// `bin`, their data under `dir` (`sandbox/`, `gateway/`).
pub(crate) async fn start_pair(
    bin: &Path,
    dir: &Path,
    gateway_flags: &[&str],
) -> anyhow::Result<(Server, Server)> {
    let sandbox = start_sandbox(bin, dir).await?;
    let env_file = dir.join("sandbox.env");
    let env: Vec<(String, String)> = std::fs::read_to_string(&env_file)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let data = dir.join("gateway").display().to_string();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data];
    args.extend_from_slice(gateway_flags);
    let gateway = start(bin, &args, &env).await?;
    Ok((sandbox, gateway))
}

/// A sandbox process of `bin`, its data under `dir/sandbox`, its settings in `dir/sandbox.env`.
pub(crate) async fn start_sandbox(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
    start_sandbox_niced(bin, dir, 0).await
}

/// A sandbox under `nice -n <nice>`, its data and its settings (`sandbox.env`) in `dir`.
pub(crate) async fn start_sandbox_niced(
    bin: &Path,
    dir: &Path,
    nice: u8,
) -> anyhow::Result<Server> {
    let (nice, bin) = (nice.to_string(), bin.display().to_string());
    let (data, env) = (
        dir.join("sandbox").display().to_string(),
        dir.join("sandbox.env").display().to_string(),
    );
    let args = [
        "-n",
        &nice,
        &bin,
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--env-file",
        &env,
    ];
    start(Path::new("nice"), &args, &[]).await
}

/// Downloads `url` `rounds` times with `concurrency` clients; MB/s over all bytes.
async fn download_rate(
    http: &reqwest::Client,
    url: &str,
    rounds: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut total = 0u64;
            for _ in 0..rounds {
                let mut r = http.get(&url).send().await?.error_for_status()?;
                while let Some(c) = r.chunk().await? {
                    total += c.len() as u64;
                }
            }
            anyhow::Ok(total)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((bytes as f64 / secs / 1e6, bytes))
}

pub async fn run(bin: PathBuf, size: u64, rounds: usize, concurrency: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let gw_data = dir.join("gateway");
    let (sandbox, gateway) = start_pair(&bin, &dir, &["--file-wait", "3600"]).await?;
    let gw_pid = gateway.child.id().context("gateway pid")?;
    let http = reqwest::Client::builder().build()?;
    let bot = 4242;
    let token = sandbox::token_for(bot);

    let new_file = |size: u64, seed: u64| {
        let http = http.clone();
        let url = format!("{}/control/files", sandbox.url);
        async move {
            let v: Value = http
                .post(url)
                .json(&json!({"bot_id": bot, "size": size, "seed": seed, "file_name": "big.bin"}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(v["file_id"].as_str().context("file_id")?.to_owned())
        }
    };
    // Warm-up: getMe, a small getFile (Bot API) and a 21 MB one (MTProto sign-in).
    for (s, seed) in [(1 << 20, 1), (21 << 20, 2)] {
        let id = new_file(s, seed).await?;
        http.get(format!("{}/bot{token}/getFile?file_id={id}", gateway.url))
            .send()
            .await?
            .error_for_status()?;
    }
    let big = new_file(size, 3).await?;
    let before = vm_hwm_kb(gw_pid);
    let t = Instant::now();
    let f: Value = http
        .get(format!("{}/bot{token}/getFile?file_id={big}", gateway.url))
        .send()
        .await?
        .json()
        .await?;
    let secs = t.elapsed().as_secs_f64();
    let after = vm_hwm_kb(gw_pid);
    if f["ok"] != true {
        bail!("getFile failed: {f}");
    }
    println!(
        "getFile over MTProto: {} MiB in {secs:.2} s = {:.0} MB/s; gateway VmHWM {before} kB -> {after} kB (+{} kB)",
        size >> 20,
        size as f64 / secs / 1e6,
        after.saturating_sub(before)
    );

    // The same bytes from /storage/ and from nginx over the blob file.
    let path = f["result"]["file_path"].as_str().context("file_path")?;
    let storage = format!("{}/storage/{path}", gateway.url);
    let etag = http.head(&storage).send().await?.headers()["etag"]
        .to_str()?
        .trim_matches('"')
        .to_owned();
    let blob_dir = gw_data.join("blobs");
    let blob_rel = format!("sha256/{}/{}/{etag}", &etag[0..2], &etag[2..4]);
    let nginx = match crate::nginx::start(
        &dir,
        "nginx",
        "1",
        "",
        &format!("root {};", blob_dir.display()),
    )
    .await
    {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("nginx not started ({e:#}); `apt-get install nginx` for the comparison");
            None
        }
    };
    println!(
        "token-free downloads, {concurrency} clients x {rounds} rounds of {} MiB:",
        size >> 20
    );
    let (rate, bytes) = download_rate(&http, &storage, rounds, concurrency).await?;
    println!("  telepipe /storage/: {rate:.0} MB/s ({} MiB)", bytes >> 20);
    if let Some(n) = &nginx {
        let url = format!("http://127.0.0.1:{}/{blob_rel}", n.port);
        let (n_rate, n_bytes) = download_rate(&http, &url, rounds, concurrency).await?;
        println!(
            "  nginx (sendfile):   {n_rate:.0} MB/s ({} MiB)",
            n_bytes >> 20
        );
        println!("  telepipe / nginx:   {:.2}", rate / n_rate);
    }
    drop(nginx);
    drop(gateway);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
