//! Two real drivers against the stand-in over TCP: the `scylla` crate (what the store uses)
//! and the DataStax Python driver (installed by `tests/clients/setup.sh` into target/clients).

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

async fn node() -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sandbox_cql::serve(listener, stop.clone()));
    (addr, stop)
}

async fn session(addr: SocketAddr) -> Session {
    SessionBuilder::new()
        .known_node(addr.to_string())
        .build()
        .await
        .expect("the driver connects and reads the metadata")
}

fn db_error(e: ExecutionError) -> (DbError, String) {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => (db, msg),
        other => panic!("not a server error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scylla_driver_runs_statements() {
    let (addr, stop) = node().await;
    let s = session(addr).await;
    s.query_unpaged(
        "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 1}",
        &[],
    )
    .await
    .unwrap();
    s.use_keyspace("ks", false).await.unwrap();
    s.query_unpaged(
        "CREATE TABLE t (k bigint, c int, v text, PRIMARY KEY ((k), c)) WITH CLUSTERING ORDER BY (c DESC)",
        &[],
    )
    .await
    .unwrap();
    // The driver learnt the table from system_schema after the schema change.
    let cluster = s.get_cluster_state();
    let table = &cluster.get_keyspace("ks").expect("keyspace known").tables["t"];
    assert_eq!(table.partition_key, vec!["k".to_string()]);
    let insert = s
        .prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)")
        .await
        .unwrap();
    for c in 0..30i32 {
        s.execute_unpaged(&insert, (1i64, c, format!("v{c}")))
            .await
            .unwrap();
    }
    // Declared descending order; paged in pages of 7.
    let mut select = s.prepare("SELECT c FROM t WHERE k = ?").await.unwrap();
    select.set_page_size(7);
    use futures_util::StreamExt;
    let got: Vec<i32> = s
        .execute_iter(select, (1i64,))
        .await
        .unwrap()
        .rows_stream::<(i32,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect()
        .await;
    assert_eq!(got, (0..30).rev().collect::<Vec<_>>());
    // A value of the wrong type is refused by the server (bypassing the driver's own check).
    let (db, msg) = db_error(
        s.query_unpaged("SELECT * FROM t WHERE v = 'x'", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(db, DbError::Invalid);
    assert!(msg.contains("ALLOW FILTERING"), "{msg}");
    let (db, msg) = db_error(
        s.query_unpaged("SELECT * FROM nope", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (db, msg.as_str()),
        (DbError::Invalid, "unconfigured table nope")
    );
    let (db, _) = db_error(s.query_unpaged("SELEKT 1", &[]).await.unwrap_err());
    assert_eq!(db, DbError::SyntaxError);
    stop.cancel();
}

#[test]
fn the_python_driver_connects_and_runs_statements() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/clients"));
    let python = dir.join("venv/bin/python");
    let has_driver = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import cassandra"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_driver {
        assert!(
            std::env::var_os("CI").is_none(),
            "cassandra-driver is missing: run tests/clients/setup.sh"
        );
        eprintln!("cassandra-driver not installed (tests/clients/setup.sh); skipping");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, stop) = rt.block_on(node());
    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python_driver.py"
        ))
        .arg(addr.port().to_string())
        .output()
        .unwrap();
    stop.cancel();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "python driver: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
