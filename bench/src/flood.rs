//! `flood`: a broadcast through flood control (issue 16). One bot sends `messages` messages,
//! one to each of as many private chats, through `telepipe serve --flood-control` to a sandbox
//! that enforces Telegram's limits (`POST /control/limits`: a send over them is Telegram's 429).
//! `in_flight` calls wait at the gateway at once (a broadcaster's workers). Measured: the
//! answers the bot got (every one should be 200: no 429 reaches it), the 429s the gateway had to
//! absorb (none, if it kept the limits), the upstream rate (sends the sandbox received, per
//! second: at most 30 in any second but the first, which may take the bucket's 30 at once), and
//! the time it took against the theoretical minimum (30 at once, then 30 a second).

use crate::files::{start_pair, stop};
use anyhow::Context;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The bot that broadcasts.
const BOT: i64 = 1_600_001;

/// `telepipe_flood_total{what="absorbed"}` of the gateway, over every bot.
async fn absorbed(gw: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{gw}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("telepipe_flood_total{") && l.contains("what=\"absorbed\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        // A float sum of nothing is -0, which would print as "-0".
        .fold(0.0, |sum, n| sum + n))
}

pub async fn run(bin: std::path::PathBuf, messages: usize, in_flight: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-flood-{}", std::process::id()));
    let (mut sandbox, mut gw) = start_pair(&bin, &dir, &["--flood-control"]).await?;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/control/limits", sandbox.url))
        .json(&json!({"enabled": true}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "the sandbox's limits: {}",
        r.status()
    );
    let base = format!("{}/bot{}", gw.url, sandbox::token_for(BOT));
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let too_many = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    println!("flood: {messages} messages to {messages} private chats, {in_flight} in flight, through --flood-control to a sandbox enforcing Telegram's limits");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (http, base) = (http.clone(), base.clone());
        let (next, ok, too_many, other) =
            (next.clone(), ok.clone(), too_many.clone(), other.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return;
                }
                let sent = http
                    .post(format!("{base}/sendMessage"))
                    .json(&json!({"chat_id": 10_000_000 + i as i64, "text": format!("news {i}")}))
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(429) => too_many.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let took = started.elapsed().as_secs_f64();
    let minimum = (messages.saturating_sub(30)) as f64 / 30.0;
    let calls: Vec<Value> = http
        .get(format!(
            "{}/control/calls?bot_id={BOT}&method=sendMessage",
            sandbox.url
        ))
        .send()
        .await?
        .json()
        .await
        .context("the sandbox's calls")?;
    // Every send the sandbox received (one it refused too: with no 429 absorbed, none was).
    let mut times: Vec<i64> = calls.iter().filter_map(|c| c["time_ms"].as_i64()).collect();
    times.sort_unstable();
    let first = times.first().copied().unwrap_or(0);
    let in_first_second = times.iter().take_while(|t| **t < first + 1000).count();
    // The most sends in any one second (a sliding window) after the first second, whose
    // bucket of 30 may leave at once.
    let mut busiest_after_first = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= 1000 {
            start += 1;
        }
        if times[start] >= first + 1000 {
            busiest_after_first = busiest_after_first.max(end - start + 1);
        }
    }
    let span = (times.iter().copied().max().unwrap_or(first) - first) as f64 / 1000.0;
    println!(
        "  answers: {} ok, {} 429, {} other",
        ok.load(Ordering::Relaxed),
        too_many.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed)
    );
    println!(
        "  upstream: {} sends over {span:.1} s ({:.2}/s); first second {}, busiest later 1 s window {}; 429s absorbed by the gateway: {}",
        times.len(),
        times.len() as f64 / span.max(0.001),
        in_first_second,
        busiest_after_first,
        absorbed(&gw.url).await?
    );
    println!(
        "  took {took:.1} s; theoretical minimum {minimum:.1} s (30 at once, then 30/s): {:.3}x",
        took / minimum.max(0.001)
    );
    stop(&mut gw).await?;
    stop(&mut sandbox).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
