//! `telepipe`: parse the command line, start telemetry, run the chosen role.

use telepipe::config::{Cli, Command};
use telepipe::Roles;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: a call's buffers are allocated on one worker thread and
/// often freed on another, which glibc pays for in locks and consolidation (a fifth of the hot
/// path's CPU in a profile; `bench/README.md`). Built with `no_thp` (the workspace's
/// Cargo.toml says why): `tests/files.rs` holds an upload's peak memory to it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_by_role();
    if let Command::FileId { ids } = &cli.command {
        return file_ids(ids);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a log file or journal gets plain text
        // (and the spans' fields are formatted without them on every call).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("telepipe")
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(lifecycle::shutdown_on_signal(shutdown.clone()));
        match cli.command {
            Command::Serve(args) => telepipe::serve(args, shutdown, None).await,
            Command::Ingest(args) => telepipe::run(Roles::Ingest, args, shutdown, None).await,
            Command::Processor { stages, args } => {
                let stages = telepipe::Stages::parse(&stages)?;
                telepipe::run(Roles::Processor(stages), args, shutdown, None).await
            }
            Command::Egress(args) => telepipe::run(Roles::Egress, args, shutdown, None).await,
            Command::Audit(args) => telepipe::record::audit(args, shutdown).await,
            Command::Replay(args) => telepipe::record::replay(args, shutdown).await,
            Command::Gc(args) => telepipe::record::gc(args).await,
            Command::FileId { .. } => unreachable!("handled before the runtime starts"),
            Command::Sandbox(args) => telepipe::sandbox(args, shutdown, None).await,
        }
    })
}

/// `telepipe file-id`: one JSON line per id; exits 1 when any id could not be decoded.
fn file_ids(ids: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    for id in ids {
        let line = match telegram::file_id::FileId::decode(id) {
            Ok(f) => f.describe(id),
            Err(e) => {
                failed = true;
                serde_json::json!({"file_id": id, "error": format!("wrong file identifier: {e}")})
            }
        };
        println!("{line}");
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
