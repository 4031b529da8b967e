//! `record`: reading the record at scale. A SQLite store is filled with `calls` audit rows as
//! the gateway writes them (sealed request, answer digest, the answer kept as a result), then
//! `telepipe audit --stats`, a full JSON listing and a selective filter run over it (wall time
//! and peak RSS of the process, from GNU time). Then the replay rate: calls made through a
//! gateway to one sandbox, replayed into a fresh one as fast as it answers.

use crate::files::{start_pair, start_sandbox, stop};
use anyhow::Context;
use schemas::{
    BodyBytes, BotId, Call, CallBody, CallId, Origin, Response, SealKey, Sealer, Stages,
};
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::{CallRow, Outcome, OutcomeStore};

const METHODS: [&str; 5] = [
    "sendMessage",
    "getMe",
    "sendPhoto",
    "editMessageText",
    "getChat",
];

/// `n` audit rows of 100 bots over the last `n / 10` seconds, into `<dir>/store.db`.
async fn fill(dir: &Path, n: u64) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let key = SealKey::generate();
    std::fs::write(dir.join("seal.key"), key.to_hex())?;
    let sealer = Sealer::new(&key);
    let store = store::sqlite::SqliteStore::open(&dir.join("store.db"))?;
    let start_ms = schemas::now_ms() - (n as i64 / 10) * 1000;
    let t = Instant::now();
    for i in 0..n {
        let bot = BotId(1_000_000 + (i % 100) as i64);
        let at = start_ms + (i as i64 * 100);
        let method = METHODS[(i % 5) as usize];
        let token = schemas::BotToken::parse(&sandbox::token_for(bot.0))?;
        let call = Call {
            token: Some(sealer.seal(&token)),
            token_fingerprint: sealer.fingerprint(token.expose()),
            test_env: false,
            method: method.into(),
            http_method: "POST".into(),
            query: String::new(),
            body: CallBody::Json {
                value: serde_json::json!({"chat_id": i % 1000, "text": format!("message {i}")}),
            },
            deadline_ms: 0,
            rejected: None,
            staged: None,
        };
        let failed = i % 50 == 0;
        let answer = if failed {
            r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#
                .to_owned()
        } else {
            format!(
                r#"{{"ok":true,"result":{{"message_id":{i},"date":{},"chat":{{"id":{},"type":"private"}},"text":"message {i}"}}}}"#,
                at / 1000,
                i % 1000
            )
        };
        let response = Response {
            status: if failed { 400 } else { 200 },
            content_type: Some("application/json".into()),
            body: BodyBytes::inline(answer.as_bytes()),
            origin: Origin::Upstream,
            stages: Stages::default(),
        };
        let row = CallRow {
            call_id: CallId::at_ms(at),
            bot_id: bot,
            received_ms: at,
            token_fingerprint: call.token_fingerprint.0.clone(),
            method: method.into(),
            http_method: "POST".into(),
            test_env: false,
            params: call.audit_params(),
            blobs: Vec::new(),
            outcome: if failed { Outcome::Error } else { Outcome::Ok },
            http_status: Some(response.status),
            error_code: failed.then_some(400),
            description: failed.then(|| "Bad Request: chat not found".into()),
            latency_ms: Some(1 + (i * 7919) % 40),
            stages: Stages::default(),
            encoding: call.encoding(),
            request: Some(call.seal_request(&sealer, bot)),
            answer_sha256: Some("00".repeat(32)),
            answer: None,
        };
        store
            .queue_outcome(row, response, schemas::now_ms() + 86_400_000)
            .await?;
    }
    // A read after the last queued write waits for nothing; a synchronous write does.
    store.purge_results(0).await?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Wall seconds and peak RSS (MB) of `telepipe <args>`, its stdout thrown away.
fn timed(bin: &Path, args: &[&str]) -> anyhow::Result<(f64, f64, String)> {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(bin)
        .args(args)
        .env("TELEPIPE_LOG", "warn")
        .output()
        .context("GNU time (Debian: apt-get install time)")?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it.next().unwrap_or("0").parse()?;
    let kb: f64 = it.next().unwrap_or("0").parse()?;
    Ok((
        secs,
        kb / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

pub async fn run(bin: PathBuf, calls: u64, replay_calls: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("telepipe-bench-record-{}", std::process::id()));
    let data = dir.join("filled");
    println!("record: {calls} audit rows (5 methods, 100 bots, 2% errors), SQLite");
    let rate = fill(&data, calls).await?;
    let db = std::fs::metadata(data.join("store.db"))?.len();
    // The rows' bulk and answers are in the record's logs beside the database.
    let logs = crate::soak::dir_bytes(&data.join("store.db-record"));
    println!(
        "  written at {rate:.0} rows/s; database {:.0} MB + record logs {:.0} MB ({:.0} B a \
         call, answer included)",
        db as f64 / 1e6,
        logs as f64 / 1e6,
        (db + logs) as f64 / calls as f64
    );
    let d = data.display().to_string();
    let (s, mb, out) = timed(&bin, &["audit", "--data-dir", &d, "--stats"])?;
    println!(
        "  audit --stats                 {s:>6.2} s  ({:.0} rows/s)  peak RSS {mb:.0} MB",
        calls as f64 / s
    );
    for l in out.lines() {
        println!("    {l}");
    }
    let (s, mb, _) = timed(&bin, &["audit", "--data-dir", &d, "--stats", "--by", "bot"])?;
    println!("  audit --stats --by bot        {s:>6.2} s  peak RSS {mb:.0} MB");
    let (s, mb, _) = timed(&bin, &["audit", "--data-dir", &d, "--format", "json"])?;
    println!(
        "  audit --format json (all)     {s:>6.2} s  ({:.0} rows/s)  peak RSS {mb:.0} MB",
        calls as f64 / s
    );
    let (s, mb, out) = timed(
        &bin,
        &[
            "audit",
            "--data-dir",
            &d,
            "--bot",
            "1000007",
            "--method",
            "sendphoto",
            "--format",
            "json",
        ],
    )?;
    println!(
        "  audit --bot --method          {s:>6.2} s  ({} rows)  peak RSS {mb:.0} MB",
        out.lines().count()
    );

    // The replay rate: calls through a gateway into one sandbox, replayed into a fresh one.
    let pair = dir.join("replayed");
    let (mut first, mut gw) = start_pair(&bin, &pair, &[]).await?;
    let gw_dir = pair.join("gateway").display().to_string();
    let http = reqwest::Client::new();
    let base = format!("{}/bot{}", gw.url, sandbox::token_for(4242));
    let per = replay_calls.div_ceil(8);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let r = http
                        .post(format!("{base}/sendMessage"))
                        .json(&serde_json::json!({"chat_id": 1 + c, "text": format!("m {i}")}))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "sendMessage: {}", r.status());
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for c in clients {
        c.await??;
    }
    stop(&mut gw).await?;
    let mut second = start_sandbox(&bin, &dir.join("fresh")).await?;
    let (s, mb, out) = timed(
        &bin,
        &[
            "replay",
            "--data-dir",
            &gw_dir,
            "--target",
            &second.url,
            "--rate",
            "1000000",
        ],
    )?;
    println!(
        "  replay of {} calls into a fresh sandbox: {s:.2} s, {:.0} calls/s, peak RSS {mb:.0} MB",
        per * 8,
        (per * 8) as f64 / s
    );
    println!("    {}", out.lines().last().unwrap_or_default());
    stop(&mut first).await?;
    stop(&mut second).await?;
    if std::env::var_os("TELEPIPE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  kept {}", dir.display());
    }
    Ok(())
}
