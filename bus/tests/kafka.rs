//! The Kafka bus against a real broker: runs when `TELEPIPE_TEST_KAFKA` names one
//! (`host:port`; `.ci/run` starts Tansu and sets it), under CI it must; elsewhere it says it
//! did not run.

use bus::kafka::{KafkaBus, KafkaConfig};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_bus_suite_on_a_broker() {
    let Ok(brokers) = std::env::var("TELEPIPE_TEST_KAFKA") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "TELEPIPE_TEST_KAFKA is not set under CI"
        );
        eprintln!("TELEPIPE_TEST_KAFKA not set: the Kafka bus suite did not run");
        return;
    };
    let mut cfg = KafkaConfig::from_url(&format!("kafka://{brokers}")).unwrap();
    // One namespace per run: topics and groups of earlier runs never interfere.
    cfg.prefix = format!("test{:08x}.", rand_u32());
    cfg.partitions = 3;
    cfg.session_timeout_ms = 2000;
    let bus = Arc::new(KafkaBus::new(cfg).unwrap());
    bus::testsuite::run_all(bus, "").await;
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0)
}

#[test]
fn parses_kafka_urls() {
    let c = KafkaConfig::from_url("kafka://a:9092,b:9092").unwrap();
    assert_eq!(c.brokers, "a:9092,b:9092");
    assert!(KafkaConfig::from_url("kafka://").is_err());
    assert!(KafkaConfig::from_url("memory").is_err());
}
