//! nginx (Debian's package) and wrk as outside references: nginx serves a fixed Bot API answer
//! as the upstream, proxies to it as the yardstick for the gateway's hot path, or serves a file
//! as the yardstick for `/storage/`; wrk is the load generator, a C program of its own, so the
//! load costs the same whoever answers.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The answer of the stand-in upstream: a sendMessage's Message, as Telegram shapes it.
pub const MESSAGE: &str = r#"{"ok":true,"result":{"message_id":1,"from":{"id":123456,"is_bot":true,"first_name":"bench","username":"bench_bot"},"chat":{"id":1,"first_name":"a","type":"private"},"date":1700000000,"text":"bench"}}"#;

pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Nginx {
    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then waits (up to 10 s) for nginx to exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: killed outright, the master leaves its workers running.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts nginx with `workers` processes, `http` blocks beside the server and the given
/// `server { }` body (without `listen`), its files under `dir/<name>`; waits until it accepts
/// connections.
pub async fn start(
    dir: &Path,
    name: &str,
    workers: &str,
    http: &str,
    server: &str,
) -> anyhow::Result<Nginx> {
    let port = free_port()?;
    let d: PathBuf = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let conf = format!(
        "daemon off; worker_processes {workers}; pid {p}/nginx.pid; error_log {p}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 10000000;\n\
         client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p};\n\
         uwsgi_temp_path {p}; scgi_temp_path {p};\n\
         {http}\n\
         server {{ listen 127.0.0.1:{port}; {server} }} }}\n",
        p = d.display(),
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .args(["-c", &path.display().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting nginx (Debian: apt-get install nginx)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("nginx did not start on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Nginx { child, port })
}

/// The stand-in Bot API: one worker answering every path with [`MESSAGE`].
pub async fn upstream(dir: &Path) -> anyhow::Result<Nginx> {
    start(
        dir,
        "upstream",
        "1",
        "",
        &format!("location / {{ default_type application/json; return 200 '{MESSAGE}'; }}"),
    )
    .await
}

/// nginx `proxy_pass` to `upstream_port` with kept-alive upstream connections: the yardstick.
/// `worker_processes auto`, as Debian's own configuration has it (one per core).
pub async fn proxy(dir: &Path, upstream_port: u16) -> anyhow::Result<Nginx> {
    start(
        dir,
        "proxy",
        "auto",
        &format!("upstream bot_api {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"),
        "location / { proxy_pass http://bot_api; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }",
    )
    .await
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

fn millis(s: &str) -> Option<f64> {
    let (n, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))?;
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> anyhow::Result<Load> {
    let mut l = Load::default();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => l.p50_ms = millis(v).context("p50")?,
            ["99%", v] => l.p99_ms = millis(v).context("p99")?,
            ["Requests/sec:", v] => l.rps = v.parse()?,
            [n, "requests", "in", secs, ..] => {
                l.requests = n.parse()?;
                l.seconds = millis(secs.trim_end_matches(',')).context("duration")? / 1000.0;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => l.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                for v in rest
                    .iter()
                    .filter_map(|v| v.trim_end_matches(',').parse::<u64>().ok())
                {
                    l.errors += v;
                }
            }
            _ => {}
        }
    }
    if l.requests == 0 {
        bail!("wrk reported no requests:\n{out}");
    }
    Ok(l)
}

/// Runs wrk (2 threads) with `connections` against `url` for `seconds`.
pub async fn wrk(url: &str, connections: usize, seconds: u64) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .await
        .context("running wrk (Debian: apt-get install wrk)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let out = "Running 10s test @ http://127.0.0.1:1/x\n  2 threads and 8 connections\n\
            Latency Distribution\n     50%  160.00us\n     75%  739.00us\n     99%    6.27ms\n\
            328757 requests in 10.02s, 110.99MB read\n  Non-2xx or 3xx responses: 3\n\
            Socket errors: connect 0, read 1, write 0, timeout 2\n\
            Requests/sec:  32817.62\n";
        let l = parse_wrk(out).unwrap();
        assert_eq!(l.requests, 328_757);
        assert!((l.seconds - 10.02).abs() < 1e-9);
        assert!((l.p50_ms - 0.16).abs() < 1e-9);
        assert!((l.p99_ms - 6.27).abs() < 1e-9);
        assert!((l.rps - 32817.62).abs() < 1e-9);
        assert_eq!(l.errors, 6);
    }
}
