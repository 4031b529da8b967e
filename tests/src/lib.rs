//! The harness of the end-to-end tests: starts the real `telepipe` binary (gateway and
//! sandbox) on `127.0.0.1:0`, learns the bound address from its first line of output, and
//! talks to the sandbox's control API.
//!
//! The binary is the one cargo built next to the test executable (`target/<profile>/telepipe`,
//! built because the `telepipe` package has integration tests of its own), or `TELEPIPE_BIN`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use sandbox::token_for as token;

/// The telepipe binary under test.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("TELEPIPE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/telepipe
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("tests run from target/<profile>/deps");
    let p = dir.join("telepipe");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` (it builds the binary) or set TELEPIPE_BIN",
        p.display()
    );
    p
}

/// `kill <sig> <pid>` (`-STOP`, `-CONT`, `-KILL`), asserting it was delivered.
pub fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{:032x}", rand::random::<u128>()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running telepipe process (with, in split mode, its helper processes). Killed when
/// dropped.
pub struct Proc {
    child: Child,
    /// Other processes of the same gateway (the processor role in split mode).
    pub helpers: Vec<(Child, String)>,
    /// How each helper was started, to start it again.
    pub helper_args: Vec<Vec<String>>,
    pub url: String,
    pub dir: TempDir,
    /// How the main process was started, to start it again.
    args: Vec<String>,
}

/// How much of each log a failed test prints.
const LOG_TAIL_LINES: usize = 40;

/// With `TELEPIPE_TEST_KEEP=<dir>`, a gateway leaves its logs and metrics there when it goes
/// (for the token scan after the suite: `tests/token_scan.rs`); its data goes with it.
///
/// A test that fails shows the end of each process's log with its panic: a failure seen once
/// in CI can then be read, not only retried.
impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tails(LOG_TAIL_LINES);
        }
        let Some(keep) = std::env::var_os("TELEPIPE_TEST_KEEP") else {
            return;
        };
        if self.args.first().is_some_and(|a| a == "sandbox") {
            return;
        }
        let name = self.dir.0.file_name().unwrap_or_default().to_owned();
        let out = std::path::Path::new(&keep).join(name);
        if std::fs::create_dir_all(&out).is_err() {
            return;
        }
        for f in self.log_files() {
            let _ = std::fs::copy(self.dir.0.join(&f), out.join(&f));
        }
        for (i, url) in self.urls().iter().enumerate() {
            if let Some(text) = blocking_metrics(url) {
                let _ = std::fs::write(out.join(format!("metrics-{i}.txt")), text);
            }
        }
    }
}

/// `GET <base>/metrics` without a runtime (from `Drop`), or nothing within two seconds.
fn blocking_metrics(base: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = base.strip_prefix("http://")?.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: gateway\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Starts `telepipe <args>` logging to `log`; returns it once it listens, with its URL.
/// The log file of a split gateway's helper: `processor-router-updates.log` and the like.
fn helper_log(args: &[String]) -> String {
    let stages: Vec<&str> = args[1..]
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    format!("processor-{}.log", stages.join("-"))
}

pub async fn spawn(args: &[&str], log: &std::path::Path) -> Result<(Child, String)> {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    spawn_command(cmd, log).await
}

/// Starts `cmd` (telepipe, maybe through a shell) logging to `log`; returns it once it
/// prints `... listening on <url>`.
pub async fn spawn_command(mut cmd: Command, log: &std::path::Path) -> Result<(Child, String)> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)?;
    // `TELEPIPE_TEST_LOG` (a `TELEPIPE_LOG` filter) for more detail while chasing a failure.
    let filter = std::env::var("TELEPIPE_TEST_LOG").unwrap_or_else(|_| "info".into());
    cmd.env("TELEPIPE_LOG", filter)
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning telepipe")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if let Some((_, url)) = line.split_once("listening on ") {
                return Ok::<_, anyhow::Error>(url.trim().to_owned());
            }
        }
        bail!("telepipe exited before listening")
    })
    .await
    .context("telepipe did not start within 20 s")??;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

impl Proc {
    async fn start(args: &[&str], dir: TempDir) -> Result<Proc> {
        let (child, url) = spawn(args, &dir.0.join("stderr.log")).await?;
        Ok(Proc {
            child,
            helpers: Vec::new(),
            helper_args: Vec::new(),
            url,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// `telepipe sandbox` on a free port.
    pub async fn sandbox(extra: &[&str]) -> Result<Proc> {
        let dir = TempDir::new("tp-sandbox");
        let data = dir.0.join("data").display().to_string();
        let env = dir.0.join("sandbox.env").display().to_string();
        let mut args = vec![
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--env-file",
            &env,
        ];
        args.extend_from_slice(extra);
        Self::start(&args, dir).await
    }

    /// A sandbox's `--env-file` settings as `telepipe serve` flags: MTProto through its face.
    pub fn mtproto_flags(&self) -> Vec<String> {
        let env =
            std::fs::read_to_string(self.dir.0.join("sandbox.env")).expect("sandbox env file");
        let mut flags = Vec::new();
        for line in env.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let flag = match k {
                "TELEPIPE_MTPROTO_ADDR" => "--mtproto-addr",
                "TELEPIPE_MTPROTO_KEY" => "--mtproto-key",
                "TELEGRAM_API_ID" => "--api-id",
                "TELEGRAM_API_HASH" => "--api-hash",
                _ => continue,
            };
            flags.push(flag.to_owned());
            flags.push(v.to_owned());
        }
        flags
    }

    /// `set -a; . <sandbox.env>; telepipe serve`: a gateway configured only by the sandbox's
    /// `--env-file`, as README shows.
    pub async fn gateway_from_env_file(sandbox: &Proc) -> Result<Proc> {
        let dir = TempDir::new("tp-gateway");
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            "set -a; . \"$1\"; set +a; exec \"$2\" serve --listen 127.0.0.1:0 --data-dir \"$3\"",
            "bash",
        ])
        .arg(sandbox.dir.0.join("sandbox.env"))
        .arg(bin())
        .arg(dir.0.join("data"));
        let (child, url) = spawn_command(cmd, &dir.0.join("stderr.log")).await?;
        Ok(Proc {
            child,
            helpers: Vec::new(),
            helper_args: Vec::new(),
            url,
            dir,
            // Not restartable through `telepipe` alone (it runs through a shell).
            args: Vec::new(),
        })
    }

    /// `telepipe serve` on a free port, forwarding to `upstream`. When `TELEPIPE_TEST_BUS`
    /// names a Kafka broker (`kafka://host:port`), the gateway runs on it, in topics and groups
    /// of its own.
    pub async fn gateway(upstream: &str, extra: &[&str]) -> Result<Proc> {
        let dir = TempDir::new("tp-gateway");
        let data = dir.0.join("data").display().to_string();
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--data-dir",
            &data,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(bus_args());
        args.extend(store_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        if !split() {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            return Self::start(&refs, dir).await;
        }
        // Split mode: the same flags for the stages' processes and an ingest process, which
        // share the data dir and the seal key. Every stage runs in a process of its own:
        // helper 0 the router, helper 1 the files stage, helper 2 the updates filter, helper 3
        // the media stage, helper 4 the send stage; every call that needs file work crosses
        // from one process to another on the bus (a send of a file: four hand-overs).
        let key = hex::encode(rand::random::<[u8; 32]>());
        let common = &args[1..];
        let mut helpers = Vec::new();
        for stages in [["router"], ["files"], ["updates"], ["media"], ["send"]] {
            let mut p: Vec<&str> = vec!["processor"];
            p.extend(stages);
            p.extend(["--seal-key", &key]);
            p.extend(common.iter().map(String::as_str));
            helpers.push(p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        let mut started = Vec::new();
        for p in &helpers {
            let refs: Vec<&str> = p.iter().map(String::as_str).collect();
            started.push(spawn(&refs, &dir.0.join(helper_log(p))).await?);
        }
        let mut i: Vec<&str> = vec!["ingest", "--seal-key", &key];
        i.extend(common.iter().map(String::as_str));
        let mut proc = Self::start(&i, dir).await?;
        proc.helpers = started;
        proc.helper_args = helpers;
        Ok(proc)
    }

    /// SIGKILL to helper `i` (no graceful anything), then waits for it to be gone.
    pub async fn kill_helper(&mut self, i: usize) {
        let (child, _) = &mut self.helpers[i];
        child.start_kill().expect("kill");
        let _ = child.wait().await;
    }

    /// Starts helper `i` again with its original flags.
    pub async fn restart_helper(&mut self, i: usize) -> Result<()> {
        let args = self.helper_args[i].clone();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.helpers[i] = spawn(&refs, &self.dir.0.join(helper_log(&args))).await?;
        Ok(())
    }

    /// SIGKILL to the main process, then the same command again (same data folder; a new
    /// port, so `url` changes).
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.kill().await;
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let (child, url) = spawn(&refs, &self.dir.0.join("stderr.log")).await?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// SIGKILL to the main process, then the same command again on the same address (so
    /// clients keep their URL, as behind a fixed service address).
    pub async fn kill_and_restart_in_place(&mut self) -> Result<()> {
        self.kill().await;
        let addr = self
            .url
            .strip_prefix("http://")
            .context("an http URL")?
            .to_owned();
        let mut args = self.args.clone();
        let listen = args
            .iter()
            .position(|a| a == "--listen")
            .context("started with --listen")?;
        args[listen + 1] = addr;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, url) = spawn(&refs, &self.dir.0.join("stderr.log")).await?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// SIGKILL to the main process (the ingest in split mode).
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// The main process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// A line of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
    pub fn status_kb(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The base URL of every process of this gateway (each serves `/metrics`).
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.helpers.iter().map(|(_, u)| u.clone()))
            .collect()
    }

    /// The gateway's audit rows for `bot`, once there are at least `n` (polls up to 30 s:
    /// some rows are written after the client has its answer).
    pub async fn audit(&self, bot: i64, n: usize) -> Result<Vec<store::CallRow>> {
        let store = self.store().await?;
        let query = store::CallQuery::bot(schemas::BotId(bot), 0, i64::MAX, 1000);
        eventually(Duration::from_secs(30), || async {
            let rows = store.calls(&query).await.ok()?;
            (rows.len() >= n).then_some(rows)
        })
        .await
        .with_context(|| format!("fewer than {n} audit rows for bot {bot}"))
    }

    /// The gateway's store, opened beside it: its SQLite file, or its ScyllaDB keyspace.
    pub async fn store(&self) -> Result<Box<dyn store::Store>> {
        Ok(match self.flag("--store") {
            Some(url) if url.starts_with("scylla://") => {
                Box::new(store::scylla::ScyllaStore::connect(&url).await?)
            }
            _ => Box::new(store::sqlite::SqliteStore::open(
                &self.data_dir().join("store.db"),
            )?),
        })
    }

    /// Every text the gateway's store holds, as one string: the SQLite files (with the
    /// write-ahead log and the record's logs), or every cell of the ScyllaDB keyspace. For asserting that a secret
    /// is nowhere in it.
    pub async fn store_text(&self) -> Result<String> {
        if let Some(url) = self.flag("--store").filter(|u| u.starts_with("scylla://")) {
            return scylla_text(&url).await;
        }
        let mut db = Vec::new();
        // The database, its WAL, and the record's logs (`store.db-record/`).
        let mut found: Vec<_> = std::fs::read_dir(self.data_dir())?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        while let Some(p) = found.pop() {
            if !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("store.db"))
                && !p.parent().is_some_and(|d| d.ends_with("store.db-record"))
            {
                continue;
            }
            if p.is_dir() {
                for e in std::fs::read_dir(&p)? {
                    found.push(e?.path());
                }
            } else {
                db.extend(std::fs::read(&p)?);
            }
        }
        anyhow::ensure!(
            !db.is_empty(),
            "no store.db in {}",
            self.data_dir().display()
        );
        Ok(String::from_utf8_lossy(&db).into_owned())
    }

    /// Everything the gateway's processes logged so far.
    pub fn log(&self) -> String {
        self.log_files()
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.0.join(f)).unwrap_or_default())
            .collect()
    }

    /// The last `lines` lines of each of the processes' logs (each cut at 1,000 characters),
    /// on stderr.
    fn print_log_tails(&self, lines: usize) {
        let role = self.args.first().map_or("process", String::as_str);
        for f in self.log_files() {
            let bytes = std::fs::read(self.dir.0.join(&f)).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let tail: Vec<String> = all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|l| l.chars().take(1_000).collect())
                .collect();
            eprintln!(
                "--- {role} {f}: the last {} of {} lines ---\n{}",
                tail.len(),
                all.len(),
                tail.join("\n")
            );
        }
    }

    /// The log files of the gateway's processes: the main one's, then each helper's.
    fn log_files(&self) -> Vec<String> {
        std::iter::once("stderr.log".to_owned())
            .chain(self.helper_args.iter().map(|a| helper_log(a)))
            .collect()
    }

    /// The gateway's data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    /// The value a flag was given on the gateway's command line (or a helper's).
    pub fn flag(&self, name: &str) -> Option<String> {
        self.args
            .iter()
            .chain(self.helper_args.iter().flatten())
            .skip_while(|a| *a != name)
            .nth(1)
            .cloned()
    }

    /// The flags that open this gateway's record from another command (`telepipe audit`,
    /// `replay`, `gc`): its data folder, and its seal key when given on the command line.
    pub fn record_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--data-dir".to_owned(),
            self.data_dir().display().to_string(),
        ];
        // What the gateway was given of the record's whereabouts: its key, blobs and store.
        for flag in ["--seal-key", "--blobs", "--store"] {
            if let Some(value) = self.flag(flag) {
                flags.push(flag.into());
                flags.push(value);
            }
        }
        flags
    }

    /// Asks the process to stop (SIGTERM) and waits for it (its helpers are killed when it
    /// is dropped).
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        terminate(&mut self.child).await
    }

    /// Asks the process, then its helpers, to stop (SIGTERM) and waits for each; its folder
    /// stays until `self` is dropped (the store can be opened after). The process's status.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let status = terminate(&mut self.child).await?;
        for (helper, _) in &mut self.helpers {
            terminate(helper).await?;
        }
        Ok(status)
    }
}

async fn terminate(child: &mut Child) -> Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
}

/// The Prometheus text a process serves at `<base>/metrics`.
pub async fn metrics(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics has a body")
}

/// Runs `telepipe <args>` to its end; its stdout, or an error with its stderr.
pub async fn telepipe(args: &[&str]) -> Result<String> {
    let out = Command::new(bin())
        .args(args)
        .env("TELEPIPE_LOG", "warn")
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "telepipe {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Whether gateways under test run as separate ingest and processor processes
/// (`TELEPIPE_TEST_SPLIT=1`, with `TELEPIPE_TEST_BUS` naming a broker).
pub fn split() -> bool {
    std::env::var("TELEPIPE_TEST_BUS").is_ok_and(|b| b.starts_with("kafka://"))
        && std::env::var("TELEPIPE_TEST_SPLIT").is_ok_and(|v| v == "1")
}

/// The bus flags for a gateway under test: none for the in-process bus, or Kafka with a fresh
/// namespace and short group timeouts.
pub fn bus_args() -> Vec<String> {
    match std::env::var("TELEPIPE_TEST_BUS") {
        Ok(url) if url.starts_with("kafka://") => {
            let ns = format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
            vec![
                "--bus".into(),
                url,
                "--kafka-prefix".into(),
                format!("{ns}."),
                "--instance".into(),
                ns,
                "--partitions".into(),
                "3".into(),
                "--kafka-session-timeout-ms".into(),
                "2000".into(),
            ]
        }
        _ => Vec::new(),
    }
    .into_iter()
    .chain(
        // The blob store shared by the roles: S3 when the suite is given one.
        std::env::var("TELEPIPE_TEST_BLOBS")
            .ok()
            .into_iter()
            .flat_map(|b| ["--blobs".to_owned(), b]),
    )
    .collect()
}

/// Every cell of every table of the keyspace a `scylla://host:port/keyspace` URL names.
async fn scylla_text(url: &str) -> Result<String> {
    let (nodes, keyspace, _) = store::scylla::parse_url(url)?;
    let cells = cql_cells(&nodes[0], Some(&keyspace)).await?;
    Ok(cells.into_iter().map(|(_, c)| c + "\n").collect())
}

/// Every cell (`ks.table`, the cell as text) of every table of `keyspace`, or of every
/// keyspace but the system ones, on the CQL node at `node` (`host:port`).
pub async fn cql_cells(node: &str, keyspace: Option<&str>) -> Result<Vec<(String, String)>> {
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node)
        .build()
        .await?;
    let tables = session
        .query_unpaged(
            "SELECT keyspace_name, table_name FROM system_schema.tables",
            &[],
        )
        .await?
        .into_rows_result()?;
    let mut out = Vec::new();
    for row in tables.rows::<(String, String)>()? {
        let (ks, table) = row?;
        if keyspace.map_or(ks.starts_with("system"), |k| k != ks) {
            continue;
        }
        let rows = session
            .query_unpaged(format!("SELECT * FROM {ks}.{table}"), &[])
            .await?
            .into_rows_result()?;
        for row in rows.rows::<scylla::value::Row>()? {
            for cell in row?.columns.into_iter().flatten() {
                out.push((format!("{ks}.{table}"), format!("{cell:?}")));
            }
        }
    }
    Ok(out)
}

/// The store flags for a gateway under test: none (SQLite in its data dir), or a keyspace of
/// its own on the CQL node `TELEPIPE_TEST_STORE` names (`scylla://host:port`).
pub fn store_args() -> Vec<String> {
    match std::env::var("TELEPIPE_TEST_STORE") {
        Ok(url) if url.starts_with("scylla://") => vec![
            "--store".into(),
            format!(
                "{}/t{:012x}",
                url.trim_end_matches('/'),
                rand::random::<u64>() & 0xffff_ffff_ffff
            ),
        ],
        _ => Vec::new(),
    }
}

/// A small real media file from `media/testdata` (made by its `make.sh`).
pub fn testdata(name: &str) -> Vec<u8> {
    let path = format!("{}/../media/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Serves `app` as a stand-in public server on 127.0.0.2 (let through with
/// `--allow-url-networks 127.0.0.2/32`; 127.0.0.1 stays private); its base URL.
pub async fn public_server(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("127.0.0.2 binds");
    let addr = l.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// `/<name>`: the test media of `media/testdata`, for URL uploads.
pub fn media_routes() -> axum::Router {
    use axum::extract::Path;
    axum::Router::new().route(
        "/{name}",
        axum::routing::get(|Path(name): Path<String>| async move { testdata(&name) }),
    )
}

/// POST `form` as multipart to `url`, the answer's JSON (whatever its status).
pub async fn post_multipart(url: impl reqwest::IntoUrl, form: reqwest::multipart::Form) -> Value {
    client()
        .post(url)
        .multipart(form)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON answer")
}

/// GET `url`, the answer's JSON (whatever its status).
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// POST `body` as JSON to `url`, the answer's JSON (whatever its status).
pub async fn post_json(url: &str, body: &Value) -> Value {
    client()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: not JSON: {e}"))
}

/// An HTTP client as a bot library would use: no compression, no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// The sandbox's control API.
pub struct Control {
    pub base: String,
    http: reqwest::Client,
}

impl Control {
    pub fn new(sandbox: &Proc) -> Self {
        Self {
            base: sandbox.url.clone(),
            http: client(),
        }
    }

    /// Calls the sandbox received from `bot_id`, oldest first.
    pub async fn calls(&self, bot_id: i64, method: Option<&str>) -> Result<Vec<Value>> {
        let mut url = format!("{}/control/calls?bot_id={bot_id}", self.base);
        if let Some(m) = method {
            url.push_str("&method=");
            url.push_str(m);
        }
        let v: Value = self.http.get(url).send().await?.json().await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    pub async fn fault(&self, fault: Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/control/faults", self.base))
            .json(&fault)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "fault refused: {}",
            r.text().await?
        );
        Ok(())
    }

    /// Waits (up to 10 s) until the sandbox has received a call of `method` from `bot_id`.
    pub async fn wait_for_call(&self, bot_id: i64, method: &str) -> Result<()> {
        eventually(Duration::from_secs(10), || async {
            (!self.calls(bot_id, Some(method)).await.ok()?.is_empty()).then_some(())
        })
        .await
        .with_context(|| format!("{method} never reached the sandbox"))
    }

    pub async fn push_update(&self, bot_id: i64, update: Value) -> Result<i64> {
        let v: Value = self
            .http
            .post(format!("{}/control/updates", self.base))
            .json(&serde_json::json!({"bot_id": bot_id, "update": update}))
            .send()
            .await?
            .json()
            .await?;
        v["update_id"].as_i64().context("update_id")
    }
}

/// Polls `f` until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port on 127.0.0.1 that refuses connections for as long as the socket is held: bound but
/// not listening, so the kernel answers a connect with a reset and hands the port to no other
/// socket (a listener bound then dropped frees its port for whatever binds next, such as
/// another process the test starts). `listen` on the socket later serves that same address.
pub fn refusing_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("its address");
    (socket, addr)
}

/// Checks that a response is a Bot API error with `code` as both status and error_code.
pub async fn assert_shaped(resp: reqwest::Response, code: u16) -> Value {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.expect("body");
    assert_eq!(status, code, "status, body {body}");
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(v["ok"], Value::Bool(false), "{body}");
    assert_eq!(v["error_code"].as_u64(), Some(code as u64), "{body}");
    assert!(v["description"].is_string(), "{body}");
    v
}
