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
        "TELEPIPE_LANES",
        "TELEPIPE_LOG",
    ] {
        assert!(h.contains(var), "serve --help lacks {var}:\n{h}");
    }
    assert!(h.contains("127.0.0.1:8081"));
    assert!(h.contains("https://api.telegram.org"));
    assert!(h.contains("./telepipe-data"));
}

/// Each role's `--help` shows the flags that role uses and leaves out the others, which it
/// still accepts (one environment may serve every role).
#[test]
fn each_roles_help_shows_only_its_own_flags() {
    let ingest = help(&["ingest", "--help"]);
    let processor = help(&["processor", "--help"]);
    let egress = help(&["egress", "--help"]);
    for h in [&ingest, &processor, &egress] {
        for var in [
            "TELEPIPE_LISTEN",
            "TELEPIPE_BUS",
            "TELEPIPE_STORE",
            "TELEPIPE_UPSTREAM",
        ] {
            assert!(h.contains(var), "{var} missing:\n{h}");
        }
    }
    for var in [
        "TELEPIPE_MAX_BODY",
        "TELEPIPE_CALL_TIMEOUT",
        "TELEPIPE_WEBHOOK_NETWORKS",
    ] {
        assert!(ingest.contains(var), "ingest --help lacks {var}");
    }
    for var in [
        "TELEPIPE_CONCURRENCY",
        "TELEPIPE_MTPROTO_KEY",
        "TELEPIPE_RETAIN_CALLS",
    ] {
        assert!(!ingest.contains(var), "ingest --help shows {var}");
        assert!(processor.contains(var), "processor --help lacks {var}");
        assert!(!egress.contains(var), "egress --help shows {var}");
    }
    for var in ["TELEPIPE_MAX_BODY", "TELEPIPE_CALL_TIMEOUT"] {
        assert!(!processor.contains(var), "processor --help shows {var}");
        assert!(!egress.contains(var), "egress --help shows {var}");
    }
    assert!(processor.contains("consumes `calls.files`"), "{processor}");
    // Left out of the help, still accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_telepipe"))
        .args(["egress", "--concurrency", "5", "--max-body", "7", "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn top_level_help_lists_the_commands() {
    let h = help(&["--help"]);
    assert!(h.contains("serve") && h.contains("sandbox"), "{h}");
    let h = help(&["sandbox", "--help"]);
    assert!(h.contains("TELEPIPE_SANDBOX_LISTEN"), "{h}");
}

/// `telepipe file-id` prints one JSON object per id, an error line for an id it cannot read,
/// and exits 1 when any failed.
#[test]
fn file_id_decodes_each_id_on_its_own_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_telepipe"))
        .args([
            "file-id",
            "BQACAgIAAxkBAAEJnzNgit00IDsKd07OdSeanwz8osecYAACdAwAAueoWEicaPvNdOYEwB8E",
            "not-a-file-id",
        ])
        .output()
        .expect("telepipe runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "document");
    assert_eq!(lines[0]["dc_id"], 2);
    assert_eq!(lines[0]["id"], 5213102278772264052i64);
    assert_eq!(lines[0]["access_hash"], -4610306729174144868i64);
    assert_eq!(
        lines[0]["file_reference"],
        "0100099f33608add34203b0a774ece75279a9f0cfca2c79c60"
    );
    assert_eq!(lines[0]["version"], "4.31");
    assert_eq!(lines[0]["file_unique_id"], "AgADdAwAAueoWEg");
    assert_eq!(lines[1]["file_id"], "not-a-file-id");
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("wrong file identifier"));
}
