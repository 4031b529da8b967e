//! `webhooks`: updates delivered per second to the webhooks of many bots, with order kept
//! per bot. Updates wait at the sandbox for B bots (U each); then every bot sets a webhook
//! (plain http, to a server in this process); the gateway polls them, runs them through
//! `updates.raw` → filter → `updates` → delivery, and pushes each to its bot's URL. Measured:
//! from the first setWebhook to the last update received; every bot's update_ids must arrive
//! in increasing order, each once.

use crate::files::{start_pair, vm_hwm_kb};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<HashMap<i64, Vec<i64>>>>;

async fn bot_server(
    seen: Seen,
    total: usize,
    done: Arc<tokio::sync::Notify>,
) -> anyhow::Result<String> {
    use axum::extract::Path;
    let app = axum::Router::new().route(
        "/hook/{bot}",
        axum::routing::post(
            move |Path(bot): Path<i64>, axum::Json(u): axum::Json<Value>| {
                let (seen, done) = (seen.clone(), done.clone());
                async move {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.entry(bot)
                        .or_default()
                        .push(u["update_id"].as_i64().unwrap_or(-1));
                    if s.values().map(Vec::len).sum::<usize>() >= total {
                        done.notify_one();
                    }
                    "{}"
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(url)
}

/// Runs `f` over `items` with `n` at once.
async fn each<T, F, Fut>(items: Vec<T>, n: usize, f: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (queue, f) = (queue.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(item) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    return anyhow::Ok(());
                };
                f(item).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub async fn run(bin: PathBuf, bots: i64, per_bot: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (sandbox, gateway) = start_pair(&bin, &dir, &[]).await?;
    let pid = gateway.child.id().context("gateway pid")?;
    let http = reqwest::Client::new();
    let total = bots as usize * per_bot;
    let seen: Seen = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    let hooks = bot_server(seen.clone(), total, done.clone()).await?;
    let first_bot = 5_000_000;
    let ids: Vec<i64> = (first_bot..first_bot + bots).collect();

    let t = Instant::now();
    {
        let (http, url) = (http.clone(), format!("{}/control/updates", sandbox.url));
        each(ids.clone(), 32, move |bot| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                for n in 0..per_bot {
                    let update = json!({"message": {"message_id": n, "date": 0,
                        "chat": {"id": 10, "type": "private"}, "text": format!("u{n}")}});
                    http.post(&url)
                        .json(&json!({"bot_id": bot, "update": update}))
                        .send()
                        .await?
                        .error_for_status()?;
                }
                Ok(())
            }
        })
        .await?;
    }
    println!(
        "{total} updates waiting at the sandbox for {bots} bots ({:.1} s to push)",
        t.elapsed().as_secs_f64()
    );

    let before = vm_hwm_kb(pid);
    let t = Instant::now();
    {
        let (http, gw, hooks) = (http.clone(), gateway.url.clone(), hooks.clone());
        each(ids.clone(), 32, move |bot| {
            let (http, gw, hooks) = (http.clone(), gw.clone(), hooks.clone());
            async move {
                let v: Value = http
                    .post(format!("{gw}/bot{}/setWebhook", sandbox::token_for(bot)))
                    .json(&json!({"url": format!("{hooks}/hook/{bot}")}))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v["ok"] != true {
                    bail!("setWebhook failed: {v}");
                }
                Ok(())
            }
        })
        .await?;
    }
    let set = t.elapsed().as_secs_f64();
    if tokio::time::timeout(Duration::from_secs(600), done.notified())
        .await
        .is_err()
    {
        let got: usize = seen.lock().unwrap().values().map(Vec::len).sum();
        bail!("only {got} of {total} updates arrived in 10 minutes");
    }
    let secs = t.elapsed().as_secs_f64();
    let after = vm_hwm_kb(pid);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let in_order = seen
        .values()
        .all(|v| v.windows(2).all(|w| w[0] < w[1]) && v.len() == per_bot);
    println!(
        "webhooks: {total} updates to {bots} bots in {secs:.2} s = {:.0} updates/s \
         (setWebhook x{bots}: {set:.2} s); order kept per bot, each once: {in_order}; \
         gateway VmHWM {before} kB -> {after} kB",
        total as f64 / secs
    );
    if !in_order {
        let bad = seen
            .iter()
            .find(|(_, v)| !(v.windows(2).all(|w| w[0] < w[1]) && v.len() == per_bot));
        bail!("order broken or updates repeated: {bad:?}");
    }
    drop(gateway);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
