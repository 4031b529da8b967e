//! Seven real Bot API client libraries pointed at the gateway (python-telegram-bot, aiogram,
//! pyTelegramBotAPI, grammY, Telegraf, node-telegram-bot-api 2.x and 0.67): getMe,
//! sendMessage, a sendDocument upload, getFile and the download, getUpdates, an error, and
//! each library's own polling loop answering a message — all through `telepipe serve`.
//!
//! The libraries are installed by `tests/clients/setup.sh` into `target/clients` (`.ci/run`
//! does it). Without them these tests say so and pass locally; under CI (`CI` set) they fail.

use std::path::PathBuf;
use std::process::Command;
use telepipe_tests::{token, Proc, TempDir};

fn clients_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/clients"));
    if dir.join("ready").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "client libraries are missing: run tests/clients/setup.sh"
    );
    eprintln!("client libraries not installed (tests/clients/setup.sh); skipping");
    None
}

async fn run(lib: &str, bot: i64) {
    let Some(dir) = clients_dir() else { return };
    let scripts = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/clients"));
    let sandbox = Proc::sandbox(&[]).await.unwrap();
    let gw = Proc::gateway(&sandbox.url, &[]).await.unwrap();
    let work = TempDir::new("tp-clients");
    let tok = token(bot);
    let mut cmd = match lib {
        "ptb" | "aiogram" | "telebot" => {
            let mut c = Command::new(dir.join("venv/bin/python"));
            c.arg(scripts.join("py_clients.py"));
            c
        }
        _ => {
            let mut c = Command::new("node");
            c.arg(scripts.join("node_clients.mjs"))
                .env("WHICH", lib)
                .env("NODE_DIR", &dir);
            c
        }
    };
    cmd.args([&gw.url, &sandbox.url, &tok, &work.0.display().to_string()]);
    if matches!(lib, "ptb" | "aiogram" | "telebot") {
        cmd.arg(lib);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("the client script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(" ok"),
        "{lib} failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.log()
    );
    eprint!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_telegram_bot() {
    run("ptb", 81001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiogram() {
    run("aiogram", 81002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_telegram_bot_api() {
    run("telebot", 81003).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grammy() {
    run("grammy", 81004).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegraf() {
    run("telegraf", 81005).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_telegram_bot_api_2() {
    run("ntba2", 81006).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_telegram_bot_api_0_67() {
    run("ntba067", 81007).await;
}
