//! `uploads`: sends of files through the gateway — multipart and from a URL, within the Bot
//! API's 50 MB (multipart upstream) and past it (MTProto as the bot, then by file_id) — with
//! the gateway's peak RSS; then the dedupe ratio: the same file sent a second time goes by its
//! cached file_id, without a second upload.
//!
//! Sandbox and gateway are separate processes of the release binary; the URL server runs in
//! this process on 127.0.0.2 (let through with `--allow-url-networks`). Content is pseudo-random
//! (incompressible, as real media is), different for every send unless it is the dedupe pair.

use crate::files::{start_pair, vm_hwm_kb, Server};
use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// `mib` MiB of content for `seed`: a pseudo-random MiB, repeated, with the seed in each.
fn chunks(mib: u64, seed: u64) -> impl Iterator<Item = Bytes> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut base = vec![0u8; 1 << 20];
    for b in base.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    (0..mib).map(move |i| {
        let mut c = base.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        Bytes::from(c)
    })
}

pub(crate) async fn url_server() -> anyhow::Result<String> {
    use axum::extract::Path;
    let app = axum::Router::new().route(
        "/{mib}/{seed}",
        axum::routing::get(|Path((mib, seed)): Path<(u64, u64)>| async move {
            let body = futures_util::stream::iter(chunks(mib, seed).map(Ok::<_, std::io::Error>));
            (
                [("content-length", (mib << 20).to_string())],
                axum::body::Body::from_stream(body),
            )
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.2:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(url)
}

struct Gw<'a> {
    http: reqwest::Client,
    server: &'a Server,
    token: String,
}

impl Gw<'_> {
    async fn multipart(&self, mib: u64, seed: u64) -> anyhow::Result<f64> {
        let body = futures_util::stream::iter(chunks(mib, seed).map(Ok::<_, std::io::Error>));
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(body),
            mib << 20,
        )
        .file_name(format!("bench-{mib}-{seed}.bin"));
        let form = reqwest::multipart::Form::new()
            .text("chat_id", "5")
            .part("document", part);
        let t = Instant::now();
        let v: Value = self
            .http
            .post(format!(
                "{}/bot{}/sendDocument",
                self.server.url, self.token
            ))
            .multipart(form)
            .send()
            .await?
            .json()
            .await?;
        check(&v, mib)?;
        Ok(t.elapsed().as_secs_f64())
    }

    async fn url(&self, files: &str, mib: u64, seed: u64) -> anyhow::Result<f64> {
        let t = Instant::now();
        let v: Value = self
            .http
            .post(format!(
                "{}/bot{}/sendDocument",
                self.server.url, self.token
            ))
            .json(&json!({"chat_id": 5, "document": format!("{files}/{mib}/{seed}")}))
            .send()
            .await?
            .json()
            .await?;
        check(&v, mib)?;
        Ok(t.elapsed().as_secs_f64())
    }
}

fn check(v: &Value, mib: u64) -> anyhow::Result<()> {
    if v["ok"] != true || v["result"]["document"]["file_size"] != mib << 20 {
        bail!("send failed: {v}");
    }
    Ok(())
}

fn line(what: &str, mib: u64, secs: f64) {
    println!(
        "  {what:<34} {mib:>5} MiB  {secs:>7.2} s  {:>6.1} MB/s",
        (mib << 20) as f64 / secs / 1e6
    );
}

pub async fn run(bin: PathBuf, big_mib: u64, dedupe_mib: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-uploads-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (sandbox, gateway) =
        start_pair(&bin, &dir, &["--allow-url-networks", "127.0.0.2/32"]).await?;
    let pid = gateway.child.id().context("gateway pid")?;
    let files = url_server().await?;
    let gw = Gw {
        http: reqwest::Client::new(),
        server: &gateway,
        token: sandbox::token_for(4343),
    };
    // Warm-up: getMe, the MTProto sign-in.
    gw.multipart(51, 1).await?;
    let before = vm_hwm_kb(pid);

    println!("uploads through the gateway (sendDocument; sandbox and gateway on one machine):");
    let mut seed = 10;
    let mut next = || {
        seed += 1;
        seed
    };
    line(
        "multipart, Bot API (<= 50 MB)",
        30,
        gw.multipart(30, next()).await?,
    );
    line(
        "URL, Bot API (<= 50 MB)",
        30,
        gw.url(&files, 30, next()).await?,
    );
    line(
        "multipart, MTProto",
        big_mib,
        gw.multipart(big_mib, next()).await?,
    );
    line(
        "URL, MTProto",
        big_mib,
        gw.url(&files, big_mib, next()).await?,
    );
    let after = vm_hwm_kb(pid);
    println!(
        "  gateway VmHWM {before} kB -> {after} kB (+{} kB)",
        after.saturating_sub(before)
    );

    println!("dedupe: the same {dedupe_mib} MiB sent twice by the same bot:");
    let s = next();
    let first = gw.multipart(dedupe_mib, s).await?;
    let second = gw.multipart(dedupe_mib, s).await?;
    line("multipart, first (MTProto)", dedupe_mib, first);
    line("multipart, again (cached file_id)", dedupe_mib, second);
    println!("  second / first: {:.3}", second / first);
    let s = next();
    let first = gw.url(&files, dedupe_mib, s).await?;
    let second = gw.url(&files, dedupe_mib, s).await?;
    line("URL, first (MTProto)", dedupe_mib, first);
    line("URL, again (fetched, cached file_id)", dedupe_mib, second);
    println!("  second / first: {:.3}", second / first);

    drop(gateway);
    drop(sandbox);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
