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

/// A topic read to its end as it stood: every record of every partition once, and of what
/// is published during the read only what is stamped within the reader's allowance for clocks;
/// the read ends although publishing goes on; no group's offsets moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_read_to_its_end_as_it_stood() {
    use bus::Bus;
    let Some(bus) = bus_on_broker("the topic reader test", "read", &[]) else {
        return;
    };
    bus.ensure_topics(&["calls".into()]).await.unwrap();
    for i in 0..30 {
        bus.publish(
            "calls",
            &format!("k{}", i % 7),
            format!("r{i}").into_bytes(),
        )
        .await
        .unwrap();
    }
    // Live traffic on one partition while the topic is read: the others, quiet, must still
    // end (a reader once waited for them as long as the live one kept sending).
    let live = tokio_util::sync::CancellationToken::new();
    let publisher = tokio::spawn({
        let (bus, live) = (bus.clone(), live.clone());
        async move {
            let mut n = 0;
            while !live.is_cancelled() {
                bus.publish("calls", "k1", format!("after{n}").into_bytes())
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            n
        }
    });
    let want: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    for since in [None, Some(schemas::now_ms() - 3_600_000)] {
        let mut reader = bus.read_to_end("calls", since).await.unwrap();
        let mut got = Vec::new();
        while let Some(r) = tokio::time::timeout(std::time::Duration::from_secs(30), reader.next())
            .await
            .expect("the reader ends while publishing goes on")
            .unwrap()
        {
            assert_eq!(r.topic, "calls");
            got.push(String::from_utf8(r.payload.to_vec()).unwrap());
        }
        let (old, new): (Vec<_>, Vec<_>) = got.into_iter().partition(|t| t.starts_with('r'));
        let mut old = old;
        old.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(old, want, "since {since:?}");
        // Published after the read began: taken only within the clocks' second of allowance
        // (one every 20 ms), and before it for the second read.
        assert!(
            new.len() < 150,
            "{} records published during the read",
            new.len()
        );
    }
    live.cancel();
    let published = 30 + publisher.await.unwrap();
    // From two minutes on, every record is older (by more than the minute of slack). Kafka's
    // time index answers "none" and nothing is read; Tansu's answers the first offset, and all
    // is read (the caller skips by time): either way the read ends.
    let later = schemas::now_ms() + 120_000;
    let mut few = bus.read_to_end("calls", Some(later)).await.unwrap();
    let mut n = 0;
    while tokio::time::timeout(std::time::Duration::from_secs(30), few.next())
        .await
        .expect("the reader ends")
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert!(n <= published, "{n} records: more than the topic holds");
}

/// Records that concurrent senders put into one batch are all read, the last batch's too:
/// Tansu's high watermark is its last batch's first offset plus one (1,002 of 1,008 records
/// were read when the reader stopped there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_takes_the_whole_last_batch() {
    use bus::Bus;
    let Some(bus) = bus_on_broker("the last-batch test", "batch", &[]) else {
        return;
    };
    bus.ensure_topics(&["calls".into()]).await.unwrap();
    publish_at_once(&bus, 126).await;
    for since in [None, Some(schemas::now_ms() - 3_600_000)] {
        let mut reader = bus.read_to_end("calls", since).await.unwrap();
        let mut n = 0;
        while tokio::time::timeout(std::time::Duration::from_secs(30), reader.next())
            .await
            .expect("the reader ends")
            .unwrap()
            .is_some()
        {
            n += 1;
        }
        assert_eq!(n, 8 * 126, "since {since:?}");
    }
}

/// Records of `calls` published in this process go to the router's consumer here as soon as
/// the broker acknowledged them (ahead of its fetch): each record is worked on once, whichever
/// way it came; every record handed over is then read in its place (its echo); and the stage
/// commits everything it did, so the group's next member finds nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_handed_over_worked_on_once_and_committed() {
    use bus::{Bus, Handed};
    use std::time::Duration;
    let Some(bus) = bus_on_broker("the hand-over test", "hand", &["calls"]) else {
        return;
    };
    let calls = vec!["calls".to_owned()];
    bus.ensure_topics(&calls).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, Handed)>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = bus.subscribe("router", &calls).await.unwrap();
    let stage = tokio::spawn({
        let (seen, stop) = (seen.clone(), stop.clone());
        let opts = bus::stage::Options {
            name: "handed",
            concurrency: 16,
            batch: 4,
            drain: Duration::from_secs(10),
        };
        bus::stage::run::<bus::BusError, _, _>(consumer, opts, stop, move |records, _| {
            let seen = seen.clone();
            async move {
                for r in records {
                    let payload = String::from_utf8_lossy(&r.payload).into_owned();
                    seen.lock().unwrap().push((payload, r.handed));
                }
                Ok(())
            }
        })
    });
    let count = |seen: &std::sync::Mutex<Vec<(String, Handed)>>| seen.lock().unwrap().len();
    // Once the first record is in, the consumer holds every partition.
    bus.publish("calls", "k0", b"first".to_vec()).await.unwrap();
    wait_until(|| count(&seen), 1, "never joined").await;
    // Concurrent publishers: records acknowledged in batches, each at its own offset.
    publish_at_once(&bus, 50).await;
    let all = 1 + 8 * 50;
    wait_until(|| count(&seen), all, "not all worked on").await;
    // The drain reads the echoes of what it did, and commits them.
    stop.cancel();
    stage.await.unwrap().unwrap();
    let seen = seen.lock().unwrap().clone();
    let mut payloads: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(
        payloads.len(),
        all,
        "each record worked on once: {} times in all",
        seen.len()
    );
    assert_eq!(seen.len(), all);
    let early = seen.iter().filter(|(_, h)| *h == Handed::Early).count();
    eprintln!("handed over: {early} of {all}");
    assert!(early > all / 2, "only {early} of {all} handed over");
    assert!(
        seen.iter()
            .all(|(_, h)| matches!(h, Handed::Early | Handed::Read)),
        "the handler gets no notices"
    );

    // The group's next member: nothing before the marker, which it reads in its place.
    let mut next = bus.subscribe("router", &calls).await.unwrap();
    bus.publish("calls", "k0", b"marker".to_vec())
        .await
        .unwrap();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), next.next())
            .await
            .expect("the marker comes")
            .unwrap();
        let payload = String::from_utf8_lossy(&r.payload).into_owned();
        match r.handed {
            Handed::Early | Handed::Lost => continue,
            Handed::Echo => break,
            Handed::Read if payload == "marker" => break,
            Handed::Read => panic!("{payload} was left uncommitted"),
        }
    }
}

/// A consumer of two topics published in its process is handed the records of both, one bell
/// waking it for either: each worked on once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_two_topics_is_handed_both() {
    use bus::{Bus, Handed};
    let topics = ["calls", "updates.kept"];
    let Some(bus) = bus_on_broker("the two-topic hand-over test", "two", &topics) else {
        return;
    };
    let t: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
    bus.ensure_topics(&t).await.unwrap();
    type Seen = Arc<std::sync::Mutex<Vec<(String, String, Handed)>>>;
    let seen: Seen = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = bus.subscribe("notices", &t).await.unwrap();
    let opts = bus::stage::Options {
        batch: 512,
        ..bus::stage::Options::sequential("notices")
    };
    let stage = tokio::spawn({
        let seen = seen.clone();
        bus::stage::run::<bus::BusError, _, _>(consumer, opts, stop.clone(), move |records, _| {
            for r in records {
                let payload = String::from_utf8_lossy(&r.payload).into_owned();
                seen.lock()
                    .unwrap()
                    .push((r.topic.clone(), payload, r.handed));
            }
            async { Ok(()) }
        })
    });
    let count = |seen: &Seen| seen.lock().unwrap().len();
    for (i, topic) in topics.iter().enumerate() {
        bus.publish(topic, "k", format!("first{i}").into_bytes())
            .await
            .unwrap();
    }
    wait_until(|| count(&seen), 2, "never joined").await;
    for i in 0..20 {
        for topic in topics {
            bus.publish(topic, "k", format!("{topic}-{i}").into_bytes())
                .await
                .unwrap();
        }
    }
    wait_until(|| count(&seen), 42, "not all worked on").await;
    stop.cancel();
    stage.await.unwrap().unwrap();
    let seen = seen.lock().unwrap().clone();
    let mut payloads: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(
        (payloads.len(), seen.len()),
        (42, 42),
        "each worked on once"
    );
    for topic in topics {
        let early = seen
            .iter()
            .filter(|(t, _, h)| t == topic && *h == Handed::Early)
            .count();
        assert!(early >= 10, "{topic}: only {early} of 21 handed over");
    }
}

/// Eight publishers at once, `each` records apiece to `calls` (keys spread over five bots):
/// records the broker acknowledges in shared batches.
async fn publish_at_once(bus: &Arc<KafkaBus>, each: usize) {
    use bus::Bus;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    let key = format!("k{}", (t * 7 + i) % 5);
                    bus.publish("calls", &key, format!("r{t}-{i}").into_bytes())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
}

/// Waits up to 30 s for `count()` to reach `n`; `what` says what failed if it does not.
async fn wait_until(count: impl Fn() -> usize, n: usize, what: &str) {
    let started = std::time::Instant::now();
    while count() < n {
        let (now, limit) = (count(), std::time::Duration::from_secs(30));
        assert!(started.elapsed() < limit, "{what}: {now} of {n}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A Kafka bus on the test broker in a namespace of its own (`what` says which test did not
/// run when there is none), with 3 partitions a topic and quick group joins.
fn bus_on_broker(what: &str, prefix: &str, local: &[&str]) -> Option<Arc<KafkaBus>> {
    let Ok(brokers) = std::env::var("TELEPIPE_TEST_KAFKA") else {
        eprintln!("TELEPIPE_TEST_KAFKA not set: {what} did not run");
        return None;
    };
    let mut cfg = KafkaConfig::from_url(&format!("kafka://{brokers}")).unwrap();
    // One namespace per run: topics and groups of earlier runs never interfere.
    cfg.prefix = format!("{prefix}{:08x}.", rand_u32());
    cfg.partitions = 3;
    cfg.session_timeout_ms = 2000;
    cfg.local = local.iter().map(|t| t.to_string()).collect();
    Some(Arc::new(KafkaBus::new(cfg).unwrap()))
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

/// A topic each reader reads whole is made with one partition, the others with the
/// configured number (a notice consumer's fetch reads every partition of its topics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_read_whole_get_one_partition() {
    use bus::Bus;
    let Some(bus) = bus_on_broker("the partition count test", "parts", &[]) else {
        return;
    };
    let responses = bus::topics::responses("kg");
    // (topic, partitions): the configured three for topics a group's members share.
    let want = [
        (bus::topics::CALLS, 3),
        (bus::topics::UPDATES, 3),
        (bus::topics::CALLS_CANCEL, 1),
        (bus::topics::FLOOD_TURNS, 1),
        (bus::topics::UPDATES_KEPT, 1),
        (&responses, 1),
    ];
    let topics: Vec<String> = want.iter().map(|(t, _)| t.to_string()).collect();
    bus.ensure_topics(&topics).await.unwrap();
    assert_partitions(&bus, &want).await;
}

/// A topic first published to, before any reader of it made it, gets the partitions its
/// readers would have made it with, not the broker's default for a topic it makes itself
/// (a files stage's `flood.turns` published before its process's flood watcher started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_published_to_first_gets_its_partitions() {
    use bus::Bus;
    let Some(bus) = bus_on_broker("the publish-first partition test", "pubfirst", &[]) else {
        return;
    };
    let responses = bus::topics::responses("kg");
    let want = [
        (bus::topics::CALLS, 3),
        (bus::topics::FLOOD_TURNS, 1),
        (&responses, 1),
    ];
    // Several first publishes to each topic at once: each may make it, and the ones that
    // find it made go on.
    let mut publishes = tokio::task::JoinSet::new();
    for (topic, _) in want {
        for i in 0..8 {
            let (bus, topic) = (bus.clone(), topic.to_owned());
            publishes.spawn(async move { bus.publish(&topic, &format!("k{i}"), vec![1]).await });
        }
    }
    while let Some(published) = publishes.join_next().await {
        published.unwrap().unwrap();
    }
    assert_partitions(&bus, &want).await;
}

/// Asserts each topic's partition count on the broker.
async fn assert_partitions(bus: &KafkaBus, want: &[(&str, usize)]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topics: Vec<String> = want.iter().map(|(t, _)| t.to_string()).collect();
    let brokers = std::env::var("TELEPIPE_TEST_KAFKA").unwrap();
    let prefix = bus.prefix().to_owned();
    let counts = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let meta = client
            .fetch_metadata(None, std::time::Duration::from_secs(10))
            .unwrap();
        topics
            .iter()
            .map(|t| {
                let full = format!("{prefix}{t}");
                let found = meta.topics().iter().find(|m| m.name() == full);
                (t.clone(), found.map(|m| m.partitions().len()))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for ((topic, count), (_, want)) in counts.into_iter().zip(want) {
        assert_eq!(count, Some(*want), "{topic}");
    }
}

/// Consumers that subscribed before their topic was made (by another process, a moment
/// later) read it once it is made: they neither fail (that stopped a whole process under CI)
/// nor stay deaf until librdkafka's default metadata refresh five minutes on. One from the
/// start reads the topic's first record; one from the end (a flood watcher's `updates`) what
/// is published once it has found the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_subscribed_before_their_topic_is_made_read_it() {
    use bus::Bus;
    use std::time::Duration;
    let Some(bus) = bus_on_broker("the topic-made-late test", "late", &[]) else {
        return;
    };
    let topic = [bus::topics::UPDATES.to_owned()];
    let mut from_start = bus.subscribe("late", &topic).await.unwrap();
    let mut from_end = bus.subscribe_from_end("late-end", &topic).await.unwrap();
    // Their first metadata (within milliseconds) finds no such topic: nothing to read, and
    // no error.
    for consumer in [&mut from_start, &mut from_end] {
        let next = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        assert!(next.is_err(), "a topic not made yet is no error: {next:?}");
    }
    bus.ensure_topics(&topic).await.unwrap();
    bus.publish(&topic[0], "k", b"first".to_vec())
        .await
        .unwrap();
    let publishing = tokio_util::sync::CancellationToken::new();
    let publisher = tokio::spawn({
        let (bus, topic, publishing) = (bus.clone(), topic[0].clone(), publishing.clone());
        async move {
            while !publishing.is_cancelled() {
                bus.publish(&topic, "k", b"later".to_vec()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    for (consumer, want) in [(&mut from_start, "first"), (&mut from_end, "later")] {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a record of a topic made after the subscription arrives within 30 s")
            .expect("no error");
        assert_eq!(record.payload.as_ref(), want.as_bytes());
    }
    publishing.cancel();
    publisher.await.unwrap();
}
