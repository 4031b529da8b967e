//! `proxy`: the hot path against nginx. One nginx answers every call with a fixed Message (the
//! upstream); nginx `proxy_pass` and `telepipe serve` (embedded, every call recorded) each
//! forward `sendMessage` to it, loaded by wrk in turns within one run. The figure is
//! telepipe's req/s over nginx's, and telepipe's p99; beside them each proxy's CPU a call (its
//! processes' user and system time over the calls), which the VM's speed moves much less than
//! req/s. Afterwards the audit rows are counted against the answers wrk saw, so the speed is
//! that of a gateway that records everything. A third proxy, `bare-proxy` (`bare.rs`: tokio and
//! hyper forwarding and nothing else), takes its turn too: the stack's own cost a call, so the
//! gap to nginx splits into the stack's share and what telepipe does on top of it.

use crate::cpu;
use crate::files::{start, stop, Server};
use crate::nginx::{self, Load};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The URL path every pass calls (a sandbox-shaped token; the upstream ignores it).
pub fn call_path() -> String {
    format!(
        "/bot{}/sendMessage?chat_id=1&text=bench",
        sandbox::token_for(123_456)
    )
}

/// `telepipe serve`'s arguments (embedded) in front of `upstream_port`, its data under `dir`.
pub fn serve_args(dir: &Path, upstream_port: u16) -> Vec<String> {
    let fixed = ["serve", "--listen", "127.0.0.1:0", "--upstream"];
    let mut args: Vec<String> = fixed.iter().map(|a| a.to_string()).collect();
    args.push(format!("http://127.0.0.1:{upstream_port}"));
    args.push("--data-dir".into());
    args.push(dir.display().to_string());
    args
}

/// `telepipe serve` (embedded) in front of `upstream_port`, its data under `dir`.
pub async fn gateway(
    bin: &Path,
    dir: &Path,
    upstream_port: u16,
    extra: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    let args = serve_args(dir, upstream_port);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    start(bin, &args, env).await
}

/// Audit rows in the SQLite store under `data_dir` (the gateway stopped).
pub fn audit_rows(data_dir: &Path) -> anyhow::Result<u64> {
    let c = rusqlite::Connection::open(data_dir.join("store.db"))?;
    Ok(c.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Ratios of rounds as a figure: `0.46x (median of 3; 0.44, 0.46, 0.47)`.
pub fn median_of(ratios: &mut [f64]) -> String {
    let m = median(ratios);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!("{m:.2}x (median of {}; {})", ratios.len(), each.join(", "))
}

/// The median of `values`, sorting them; of an even number, the mean of the middle two; NaN of
/// none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The gateway's `telepipe_stage_seconds{stage="ingest"}` buckets: (upper bound in seconds,
/// calls at or under it), cumulative as Prometheus keeps them; the last is +Inf (every call).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(Vec<(f64, u64)>);

impl Buckets {
    /// Read from a `/metrics` text.
    pub fn parse(metrics: &str) -> Self {
        let prefix = "telepipe_stage_seconds_bucket{stage=\"ingest\",le=\"";
        Self(
            metrics
                .lines()
                .filter_map(|l| {
                    let (le, count) = l.strip_prefix(prefix)?.split_once("\"} ")?;
                    // Rust reads "+Inf" as infinity.
                    Some((le.parse().ok()?, count.trim().parse::<f64>().ok()? as u64))
                })
                .collect(),
        )
    }

    async fn scrape(gw: &str) -> anyhow::Result<Self> {
        let text = reqwest::get(format!("{gw}/metrics"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Self::parse(&text))
    }

    /// The calls counted between `before` and `self`, and the smallest bucket bound (ms) that
    /// holds 99% of them (infinite: beyond the last finite bound; None: no calls).
    fn p99_bound_ms(&self, before: &Self) -> (u64, Option<f64>) {
        let since = |le: f64, count: u64| {
            let was = before
                .0
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, c)| *c);
            count.saturating_sub(was)
        };
        // The calls of the pass: the counts are cumulative, so +Inf's is every call.
        let calls = self
            .0
            .iter()
            .find(|(le, _)| le.is_infinite())
            .map_or(0, |&(le, count)| since(le, count));
        let bound = self
            .0
            .iter()
            .find(|(le, count)| calls > 0 && since(*le, *count) as f64 >= 0.99 * calls as f64)
            .map(|(le, _)| le * 1000.0);
        (calls, bound)
    }
}

/// CPU a call, in µs: its user and system parts.
#[derive(Clone, Copy)]
struct CallCpu {
    user: f64,
    system: f64,
}

impl CallCpu {
    fn total(self) -> f64 {
        self.user + self.system
    }
}

fn row(label: &str, l: &Load, cpu: CallCpu) {
    println!(
        "  {label:<26} {:>9.0} {:>9.3} {:>9.3} {:>9} {:>7} {:>11.1} {:>6.1} {:>6.1}",
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.requests,
        l.errors,
        cpu.total(),
        cpu.user,
        cpu.system
    );
}

/// A wrk run on `url` and the CPU it cost the process `pid` and its children, a call.
async fn loaded(
    url: &str,
    pid: u32,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(Load, CallCpu)> {
    let before = cpu::tree_ticks(pid);
    let load = nginx::wrk(url, connections, seconds).await?;
    let spent = cpu::tree_ticks(pid).since(before);
    let per_call = |ticks| cpu::us_per_call(ticks, load.requests);
    let cpu = CallCpu {
        user: per_call(spent.user),
        system: per_call(spent.system),
    };
    Ok((load, cpu))
}

pub async fn run(
    bin: PathBuf,
    seconds: u64,
    connections: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let up = nginx::upstream(&dir).await?;
    let px = nginx::proxy(&dir, up.port).await?;
    let data = dir.join("gateway");
    let mut gw = gateway(&bin, &data, up.port, &[], &[]).await?;
    let me = std::env::current_exe()?;
    let bare = start(&me, &["bare-proxy", &up.port.to_string()], &[]).await?;
    let path = call_path();
    let direct = format!("http://127.0.0.1:{}{path}", up.port);
    let via_nginx = format!("http://127.0.0.1:{}{path}", px.port);
    let via_telepipe = format!("{}{path}", gw.url);
    let via_bare = format!("{}{path}", bare.url);

    // Warm-up: connections, caches, the store's first pages.
    let mut answered = 0;
    for url in [&direct, &via_nginx, &via_bare, &via_telepipe] {
        let l = nginx::wrk(url, connections, 2).await?;
        if url == &via_telepipe {
            answered += l.requests;
        }
    }
    println!(
        "hot path: sendMessage, wrk -t2 -c{connections}, {seconds} s a pass, {} cores shared by \
         wrk, the upstream and the proxy",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  {:<26} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11} {:>6} {:>6}",
        "pass", "req/s", "p50 ms", "p99 ms", "requests", "errors", "cpu µs/call", "user", "sys"
    );
    let pid = |pid: Option<u32>| pid.context("a server has exited");
    let (up_pid, px_pid, gw_pid) = (pid(up.pid())?, pid(px.pid())?, pid(gw.child.id())?);
    let bare_pid = pid(bare.child.id())?;
    let (d, d_cpu) = loaded(&direct, up_pid, connections, seconds).await?;
    row("upstream (nginx) direct", &d, d_cpu);
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let (mut bare_ratios, mut bare_cpu, mut bare_user) = (Vec::new(), Vec::new(), Vec::new());
    let mut worst_p99: f64 = 0.0;
    let mut inside = Vec::new();
    for round in 1..=rounds {
        let (n, n_cpu) = loaded(&via_nginx, px_pid, connections, seconds).await?;
        let (b, b_cpu) = loaded(&via_bare, bare_pid, connections, seconds).await?;
        let before = Buckets::scrape(&gw.url).await?;
        let (t, t_cpu) = loaded(&via_telepipe, gw_pid, connections, seconds).await?;
        inside.push(Buckets::scrape(&gw.url).await?.p99_bound_ms(&before).1);
        answered += t.requests;
        row(&format!("nginx proxy_pass #{round}"), &n, n_cpu);
        row(&format!("bare hyper proxy #{round}"), &b, b_cpu);
        row(&format!("telepipe (embedded) #{round}"), &t, t_cpu);
        ratios.push(t.rps / n.rps);
        cpu_ratios.push(t_cpu.total() / n_cpu.total().max(f64::MIN_POSITIVE));
        for (name, l) in [("nginx", &n), ("the bare proxy", &b), ("telepipe", &t)] {
            if l.errors > 0 {
                println!(
                    "  warning: {name} answered {} calls with errors in round {round}: its req/s \
                     and CPU a call count them",
                    l.errors
                );
            }
        }
        bare_ratios.push(b.rps / n.rps);
        bare_cpu.push(t_cpu.total() - b_cpu.total());
        bare_user.push(t_cpu.user - b_cpu.user);
        worst_p99 = worst_p99.max(t.p99_ms);
    }
    println!(
        "  telepipe / nginx proxy_pass: {}; telepipe p99 at most {worst_p99:.2} ms",
        median_of(&mut ratios)
    );
    // The ingest stage runs from its handler's start (the request's head parsed) to the
    // pipeline's answer reaching it: the rest of wrk's latency is hyper's parse and write,
    // the sockets, and the time a task or process waited for a CPU.
    let inside: Vec<String> = inside
        .iter()
        .map(|b| match b {
            None => "no calls".into(),
            Some(ms) if ms.is_infinite() => "over 60000".into(),
            Some(ms) => format!("{ms}"),
        })
        .collect();
    println!(
        "  telepipe's own p99 (its ingest stage, a bucket's bound) in ms, each pass: {}",
        inside.join(", ")
    );
    println!(
        "  CPU a call, telepipe / nginx proxy_pass: {}",
        median_of(&mut cpu_ratios)
    );
    println!(
        "  bare hyper proxy / nginx proxy_pass: {} (the stack alone); CPU a call telepipe adds \
         to it: {:.1} µs, {:.1} of it user time (medians)",
        median_of(&mut bare_ratios),
        median(&mut bare_cpu),
        median(&mut bare_user)
    );
    drop(bare);
    stop(&mut gw).await?;
    let rows = audit_rows(&data).context("counting audit rows")?;
    println!(
        "  recorded: {rows} audit rows for {answered} answers wrk counted (it does not count \
         calls cut off when a pass ends)"
    );
    drop(px);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{median_of, Buckets};

    #[test]
    fn the_ingest_stages_p99_is_read_from_its_buckets() {
        let text = |counts: [u64; 4]| {
            format!(
                "telepipe_stage_seconds_bucket{{stage=\"queue\",le=\"0.001\"}} 7\n\
                 telepipe_stage_seconds_bucket{{stage=\"ingest\",le=\"0.0005\"}} {}\n\
                 telepipe_stage_seconds_bucket{{stage=\"ingest\",le=\"0.001\"}} {}\n\
                 telepipe_stage_seconds_bucket{{stage=\"ingest\",le=\"60\"}} {}\n\
                 telepipe_stage_seconds_bucket{{stage=\"ingest\",le=\"+Inf\"}} {}\n",
                counts[0], counts[1], counts[2], counts[3]
            )
        };
        let before = Buckets::parse(&text([10, 10, 10, 10]));
        let inf = f64::INFINITY;
        assert_eq!(
            before.0,
            vec![(0.0005, 10), (0.001, 10), (60.0, 10), (inf, 10)]
        );
        // 1000 calls in the pass: 980 within 0.5 ms, 995 within 1 ms.
        let after = Buckets::parse(&text([990, 1005, 1010, 1010]));
        assert_eq!(after.p99_bound_ms(&before), (1000, Some(1.0)));
        let after = Buckets::parse(&text([1000, 1005, 1010, 1010]));
        assert_eq!(after.p99_bound_ms(&before), (1000, Some(0.5)));
        // 20 of 1000 over a minute: past the last finite bound.
        let after = Buckets::parse(&text([990, 990, 990, 1010]));
        assert_eq!(after.p99_bound_ms(&before), (1000, Some(inf)));
        assert_eq!(before.p99_bound_ms(&before), (0, None));
        assert_eq!(Buckets::default().p99_bound_ms(&before), (0, None));
    }

    #[test]
    fn rounds_read_as_their_median_and_each() {
        assert_eq!(
            median_of(&mut [0.47, 0.44, 0.46]),
            "0.46x (median of 3; 0.44, 0.46, 0.47)"
        );
        assert_eq!(median_of(&mut [1.0]), "1.00x (median of 1; 1.00)");
        assert_eq!(
            median_of(&mut [1.20, 0.90, 1.00, 1.60]),
            "1.10x (median of 4; 0.90, 1.00, 1.20, 1.60)"
        );
    }
}
