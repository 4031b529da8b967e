//! The ScyllaDB store passes the shared store suite: on the sandbox's CQL stand-in (always),
//! and on a real node where `TELEPIPE_TEST_SCYLLA` names one (`host:9042`; `docker compose up
//! scylla` gives one).

use tokio_util::sync::CancellationToken;

async fn suite_on(node: &str) {
    let keyspace = format!("telepipe_test_{}", std::process::id());
    let store = store::scylla::ScyllaStore::connect(&format!("scylla://{node}/{keyspace}"))
        .await
        .expect("connects and migrates");
    store::testsuite::run_all(&store).await;
    // Connecting again finds everything in place (the migrations are idempotent).
    store::scylla::ScyllaStore::connect(&format!("scylla://{node}/{keyspace}"))
        .await
        .expect("connects again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_suite_on_the_cql_stand_in() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let node = tokio::spawn(sandbox_cql::serve(listener, stop.clone()));
    suite_on(&addr.to_string()).await;
    stop.cancel();
    node.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_suite_on_scylla() {
    let Ok(node) = std::env::var("TELEPIPE_TEST_SCYLLA") else {
        eprintln!("TELEPIPE_TEST_SCYLLA not set: the suite did not run on a real ScyllaDB node");
        return;
    };
    suite_on(&node).await;
}
