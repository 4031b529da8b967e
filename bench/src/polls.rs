//! `polls`: many bots long-polling at once. The gateway's RSS per parked poll, and the latency
//! of other bots' sendMessage at a steady rate with and without the polls (issue 15: a waiting
//! poll must hold no processing slot and cost little memory). Sandbox and gateway run as
//! separate processes of the release binary; each poll is a connection to the gateway and one
//! from the gateway to the sandbox, so the file-descriptor limit must allow twice the polls
//! (`ulimit -n`).

use crate::files::{proc_kb, start_pair, stop};
use std::time::{Duration, Instant};

/// sendMessage of one bot at `rate` a second for `seconds`: p50 and p99 in ms, and failures.
pub(crate) async fn load(base: &str, rate: u64, seconds: u64) -> anyhow::Result<(f64, f64, usize)> {
    let (ms, failed) = samples(base, rate, seconds).await?;
    Ok((percentile(&ms, 0.50), percentile(&ms, 0.99), failed))
}

/// The latencies (ms, sorted) of `rate` sendMessage a second for `seconds`, and how many failed.
pub(crate) async fn samples(
    base: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let http = reqwest::Client::new();
    let total = rate * seconds;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        let (http, url) = (
            http.clone(),
            format!("{base}/sendMessage?chat_id=1&text=m{i}"),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (t.elapsed().as_secs_f64() * 1000.0, ok)
        }));
    }
    let mut ms = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (m, ok) = t.await?;
        ms.push(m);
        failed += usize::from(!ok);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, failed))
}

/// The `p` quantile (nearest rank) of sorted samples; 0 when there are none.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The gateway's `telepipe_long_polls_waiting`.
async fn waiting(gw: &str) -> u64 {
    let text = reqwest::get(format!("{gw}/metrics"))
        .await
        .ok()
        .map(|r| r.text());
    let Some(text) = text else { return 0 };
    text.await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("telepipe_long_polls_waiting "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

pub async fn run(
    bin: std::path::PathBuf,
    polls: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-polls-{}", std::process::id()));
    let (mut sandbox, mut gw) = start_pair(&bin, &dir, &[]).await?;
    let pid = gw.child.id().unwrap_or(0);
    let base = format!("{}/bot{}", gw.url, sandbox::token_for(900_000));
    // Warm-up: connections, the store's first pages.
    load(&base, rate, 2).await?;
    let (p50, p99, failed) = load(&base, rate, seconds).await?;
    let rss_before = proc_kb(pid, "VmRSS");
    println!("polls: {polls} bots long-polling (timeout 50 s); another bot's sendMessage at {rate}/s for {seconds} s");
    println!(
        "  {:<28} {:>9} {:>9} {:>7} {:>10}",
        "", "p50 ms", "p99 ms", "failed", "RSS MB"
    );
    println!(
        "  {:<28} {p50:>9.2} {p99:>9.2} {failed:>7} {:>10.1}",
        "no polls",
        rss_before as f64 / 1024.0
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut open = Vec::new();
    for i in 0..polls {
        let url = format!(
            "{}/bot{}/getUpdates?timeout=50",
            gw.url,
            sandbox::token_for(1_000_000 + i as i64)
        );
        let http = http.clone();
        open.push(tokio::spawn(async move {
            http.get(url).send().await.map(|r| r.status())
        }));
    }
    let opened = Instant::now();
    while waiting(&gw.url).await < polls as u64 && opened.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let parked = waiting(&gw.url).await;
    let rss_polls = proc_kb(pid, "VmRSS");
    let (p50, p99, failed) = load(&base, rate, seconds).await?;
    println!(
        "  {:<28} {p50:>9.2} {p99:>9.2} {failed:>7} {:>10.1}",
        format!("{parked} polls parked"),
        rss_polls as f64 / 1024.0
    );
    println!(
        "  gateway RSS per parked poll: {:.1} KB (both connections, the call's task and record)",
        (rss_polls.saturating_sub(rss_before)) as f64 / parked.max(1) as f64
    );
    for p in open {
        p.abort();
    }
    stop(&mut gw).await?;
    stop(&mut sandbox).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn a_percentile_is_the_nearest_rank() {
        let ms: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&ms, 0.50), 500.0);
        // The p99 of 1,000 samples is their tenth-worst.
        assert_eq!(percentile(&ms, 0.99), 990.0);
        assert_eq!(percentile(&ms[..1], 0.99), 1.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
