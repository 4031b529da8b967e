//! The behaviour every [`Bus`] implementation must show. The in-process bus runs it in its
//! tests; the Kafka bus runs it when `TELEPIPE_TEST_KAFKA` names a broker. `ns` keeps the
//! topics of one run apart from any other's.

use crate::{Bus, Consumer, Record};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Generous, because a Kafka group join takes a moment.
const WAIT: Duration = Duration::from_secs(30);

async fn next(c: &mut Box<dyn Consumer>) -> Record {
    tokio::time::timeout(WAIT, c.next())
        .await
        .expect("a record in time")
        .expect("the bus works")
}

pub async fn run_all(bus: Arc<dyn Bus>, ns: &str) {
    per_key_order(bus.as_ref(), &format!("{ns}order")).await;
    waits_for_records(bus.clone(), &format!("{ns}wait")).await;
    uncommitted_records_are_redelivered(bus.as_ref(), &format!("{ns}redeliver")).await;
    groups_each_see_everything(bus.as_ref(), &format!("{ns}groups")).await;
    a_group_from_the_end_reads_only_what_comes_after(bus.as_ref(), &format!("{ns}fromend")).await;
}

/// Records of one key come out in the order they went in, from a new group's start.
async fn per_key_order(bus: &dyn Bus, topic: &str) {
    let t = vec![topic.to_owned()];
    bus.ensure_topics(&t).await.unwrap();
    for i in 0..60u32 {
        bus.publish(topic, &format!("bot{}", i % 3), i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut c = bus.subscribe("g", &t).await.unwrap();
    let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
    for _ in 0..60 {
        let r = next(&mut c).await;
        assert_eq!(r.topic, topic);
        let v = u32::from_be_bytes(r.payload[..].try_into().unwrap());
        seen.entry(r.key).or_default().push(v);
    }
    assert_eq!(seen.len(), 3);
    for v in seen.values() {
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    }
}

/// A consumer waiting on an empty topic wakes when a record arrives.
async fn waits_for_records(bus: Arc<dyn Bus>, topic: &str) {
    let t = vec![topic.to_owned()];
    bus.ensure_topics(&t).await.unwrap();
    let mut c = bus.subscribe("g", &t).await.unwrap();
    let b = bus.clone();
    let topic2 = topic.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.publish(&topic2, "k", b"late".to_vec()).await.unwrap();
    });
    assert_eq!(&next(&mut c).await.payload[..], b"late");
}

/// What a member read but did not commit is read again by the group after it leaves.
async fn uncommitted_records_are_redelivered(bus: &dyn Bus, topic: &str) {
    let t = vec![topic.to_owned()];
    bus.ensure_topics(&t).await.unwrap();
    for i in 0..3u8 {
        bus.publish(topic, "k", vec![i]).await.unwrap();
    }
    let mut c = bus.subscribe("g", &t).await.unwrap();
    let r0 = next(&mut c).await;
    assert_eq!(r0.payload[0], 0);
    c.commit(&r0.topic, r0.partition, r0.offset).await.unwrap();
    let r1 = next(&mut c).await;
    assert_eq!(r1.payload[0], 1);
    // What a draining role does before it leaves: make its commits durable.
    c.flush().await.unwrap();
    drop(c);
    let mut c = bus.subscribe("g", &t).await.unwrap();
    assert_eq!(
        next(&mut c).await.payload[0],
        1,
        "the uncommitted record comes again"
    );
    assert_eq!(next(&mut c).await.payload[0], 2);
}

/// Two groups each see every record; two members of one group together see every record.
async fn groups_each_see_everything(bus: &dyn Bus, topic: &str) {
    let t = vec![topic.to_owned()];
    bus.ensure_topics(&t).await.unwrap();
    let mut a = bus.subscribe("shared", &t).await.unwrap();
    let mut b = bus.subscribe("shared", &t).await.unwrap();
    let mut other = bus.subscribe("other", &t).await.unwrap();
    for i in 0..40u8 {
        bus.publish(topic, &format!("key{i}"), vec![i])
            .await
            .unwrap();
    }
    let mut all = HashSet::new();
    for _ in 0..40 {
        all.insert(next(&mut other).await.payload[0]);
    }
    assert_eq!(all.len(), 40);
    let mut shared = HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while shared.len() < 40 && tokio::time::Instant::now() < deadline {
        let r = tokio::select! {
            r = a.next() => r.unwrap(),
            r = b.next() => r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
        };
        shared.insert(r.payload[0]);
    }
    assert_eq!(shared.len(), 40, "the group saw every record");
}

/// A new group that subscribes from the end reads what is published after it joined, never
/// what was there before. (A Kafka group joins a moment after `subscribe_from_end` returns:
/// records are published until one arrives.)
async fn a_group_from_the_end_reads_only_what_comes_after(bus: &dyn Bus, topic: &str) {
    let t = vec![topic.to_owned()];
    bus.ensure_topics(&t).await.unwrap();
    for _ in 0..3 {
        bus.publish(topic, "k", b"before".to_vec()).await.unwrap();
    }
    let mut c = bus.subscribe_from_end("fresh", &t).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let r = loop {
        assert!(tokio::time::Instant::now() < deadline, "nothing read");
        bus.publish(topic, "k", b"after".to_vec()).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), c.next()).await {
            break r.unwrap();
        }
    };
    assert_eq!(&r.payload[..], b"after");
    // An old group, from the start: it reads what was there.
    let mut old = bus.subscribe("old", &t).await.unwrap();
    assert_eq!(&next(&mut old).await.payload[..], b"before");
}
