//! The command line documents every flag with its environment variable. (This package having
//! an integration test also makes `cargo test --workspace` build the binary that the
//! end-to-end tests in `tests/` start.)

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_telepipe"))
        .args(args)
        .output()
        .expect("telepipe runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// `serve --help` names the variable of every flag, and the defaults DESIGN.md promises.
#[test]
fn serve_help_lists_every_variable() {
    let h = help(&["serve", "--help"]);
    for var in [
        "TELEPIPE_LISTEN",
        "TELEPIPE_UPSTREAM",
        "TELEPIPE_DATA_DIR",
        "TELEPIPE_SEAL_KEY",
        "TELEPIPE_CALL_TIMEOUT",
        "TELEPIPE_CONNECT_TIMEOUT",
        "TELEPIPE_MAX_BODY",
        "TELEPIPE_MAX_UPLOAD",
        "TELEPIPE_PER_BOT_CONCURRENCY",
        "TELEPIPE_CONCURRENCY",
        "TELEPIPE_PARTITIONS",
        "TELEPIPE_BUS",
        "TELEPIPE_STORE",
        "TELEPIPE_KAFKA_PREFIX",
        "TELEPIPE_KAFKA_REPLICATION",
        "TELEPIPE_KAFKA_SESSION_TIMEOUT_MS",
        "TELEPIPE_INSTANCE",
        "TELEPIPE_DRAIN_TIMEOUT",
        "TELEPIPE_LOG",
    ] {
        assert!(h.contains(var), "serve --help lacks {var}:\n{h}");
    }
    assert!(h.contains("127.0.0.1:8081"));
    assert!(h.contains("https://api.telegram.org"));
    assert!(h.contains("./telepipe-data"));
}

#[test]
fn top_level_help_lists_the_commands() {
    let h = help(&["--help"]);
    assert!(h.contains("serve") && h.contains("sandbox"), "{h}");
    let h = help(&["sandbox", "--help"]);
    assert!(h.contains("TELEPIPE_SANDBOX_LISTEN"), "{h}");
}
