//! After the whole end-to-end suite: no bot token in plaintext anywhere the gateways wrote —
//! their logs and metrics (kept by `TELEPIPE_TEST_KEEP`), the bus (every topic on the Kafka
//! broker), the store (every keyspace on the CQL node) and the blobs (every object in the S3
//! bucket). `.ci/run` runs it after its second pass, with `TELEPIPE_TEST_SCAN` naming the kept
//! folder; otherwise it says it did not run.
//!
//! Every token the suite uses comes from `sandbox::token_for`, whose secret starts with
//! `AAsandbox`: that is what is looked for. The sandbox (the fake Telegram) sees tokens by
//! design and is not scanned.

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::Path;
use std::time::Duration;

const NEEDLE: &[u8] = b"AAsandbox";

fn holds(bytes: &[u8]) -> bool {
    bytes.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Where in `bytes` the first token is, as text around it (the secret left out).
fn context(bytes: &[u8]) -> String {
    let at = bytes
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .unwrap_or(0);
    let before = String::from_utf8_lossy(&bytes[at.saturating_sub(80)..at]).into_owned();
    format!("…{before}<token>")
}

/// Every file under `dir`: (path, whether it holds a token).
fn scan_dir(dir: &Path, found: &mut Vec<String>, n: &mut usize) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            scan_dir(&path, found, n)?;
        } else {
            *n += 1;
            let bytes = std::fs::read(&path)?;
            if holds(&bytes) {
                found.push(format!("file {}: {}", path.display(), context(&bytes)));
            }
        }
    }
    Ok(())
}

/// Every record of every topic on the broker (keys, values and headers).
fn scan_kafka(brokers: &str, found: &mut Vec<String>) -> Result<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("token-scan-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(None, timeout)?;
    // Every partition with records, assigned at once from its first record.
    let mut list = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for topic in metadata.topics() {
        if topic.name().starts_with("__") {
            continue;
        }
        for p in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic.name(), p.id(), timeout)?;
            if high > low {
                list.add_partition_offset(topic.name(), p.id(), Offset::Offset(low))?;
                ends.insert((topic.name().to_owned(), p.id()), high);
            }
        }
    }
    consumer.assign(&list)?;
    let mut records = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        records += 1;
        let at = (m.topic().to_owned(), m.partition());
        if ends.get(&at).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&at);
        }
        let mut bytes = m.payload().unwrap_or_default().to_vec();
        bytes.extend_from_slice(m.key().unwrap_or_default());
        if let Some(h) = m.headers() {
            use rdkafka::message::Headers;
            for header in h.iter() {
                bytes.extend_from_slice(header.key.as_bytes());
                bytes.extend_from_slice(header.value.unwrap_or_default());
            }
        }
        if holds(&bytes) {
            found.push(format!(
                "bus {}[{}]@{}: {}",
                m.topic(),
                m.partition(),
                m.offset(),
                context(&bytes)
            ));
        }
    }
    anyhow::ensure!(
        ends.is_empty(),
        "partitions not read to their end: {ends:?}"
    );
    Ok(records)
}

/// Every cell of every table of every keyspace but the system ones.
async fn scan_cql(url: &str, found: &mut Vec<String>) -> Result<usize> {
    let node = url
        .strip_prefix("scylla://")
        .context("a scylla:// URL")?
        .trim_end_matches('/');
    let cells = telepipe_tests::cql_cells(node, None).await?;
    for (place, text) in &cells {
        if holds(text.as_bytes()) {
            found.push(format!("store {place}: {}", context(text.as_bytes())));
        }
    }
    Ok(cells.len())
}

/// Every object of the bucket up to 16 MiB (a token is in a body or a part, not a video).
async fn scan_s3(url: &str, found: &mut Vec<String>) -> Result<usize> {
    let (bucket, query) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('?'))
        .context("an s3://bucket?endpoint=... URL")?;
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        b = match k.as_ref() {
            "endpoint" => b.with_endpoint(v.as_ref()),
            "region" => b.with_region(v.as_ref()),
            "allow_http" => b.with_allow_http(v == "true"),
            _ => b,
        };
    }
    let s3 = b.build()?;
    use object_store::ObjectStore;
    let objects: Vec<_> = s3.list(None).try_collect().await?;
    for o in &objects {
        if o.size > 16 << 20 {
            continue;
        }
        let bytes = s3.get(&o.location).await?.bytes().await?;
        if holds(&bytes) {
            found.push(format!("blob {}: {}", o.location, context(&bytes)));
        }
    }
    Ok(objects.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_plaintext_after_the_suite() {
    let Ok(kept) = std::env::var("TELEPIPE_TEST_SCAN") else {
        eprintln!("TELEPIPE_TEST_SCAN not set: the token scan after the suite did not run");
        return;
    };
    let mut found = Vec::new();
    let mut files = 0;
    scan_dir(Path::new(&kept), &mut found, &mut files).unwrap();
    assert!(
        files > 0,
        "nothing kept in {kept}: was TELEPIPE_TEST_KEEP set for the suite?"
    );
    eprintln!("token scan: {files} kept log and metrics files");
    if let Some(brokers) = std::env::var("TELEPIPE_TEST_BUS")
        .ok()
        .and_then(|b| b.strip_prefix("kafka://").map(str::to_owned))
    {
        let records = tokio::task::spawn_blocking({
            let mut f = Vec::new();
            move || scan_kafka(&brokers, &mut f).map(|n| (n, f))
        })
        .await
        .unwrap()
        .unwrap();
        eprintln!("token scan: {} bus records", records.0);
        assert!(records.0 > 0, "the bus was empty");
        found.extend(records.1);
    }
    if let Ok(store) = std::env::var("TELEPIPE_TEST_STORE") {
        let cells = scan_cql(&store, &mut found).await.unwrap();
        eprintln!("token scan: {cells} store cells");
    }
    if let Ok(blobs) = std::env::var("TELEPIPE_TEST_BLOBS") {
        let objects = scan_s3(&blobs, &mut found).await.unwrap();
        eprintln!("token scan: {objects} blobs");
    }
    found.sort();
    found.dedup();
    let mut by_place = std::collections::BTreeMap::<String, usize>::new();
    for f in &found {
        let place: String = f
            .split([':', '[', '@'])
            .next()
            .unwrap_or_default()
            .to_owned();
        *by_place.entry(place).or_default() += 1;
    }
    eprintln!("token scan: found by place {by_place:#?}");
    assert!(
        found.is_empty(),
        "a token in plaintext in {} places: {:#?}",
        found.len(),
        &found[..found.len().min(40)]
    );
}
