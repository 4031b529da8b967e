//! The Kafka bus (rdkafka): the same `Bus` contract on a real broker, for deployments that
//! run each role as its own process and scale them apart.
//!
//! - Topics are `<prefix><name>` (prefix `telepipe.` by default), created when missing on
//!   start and before a process first publishes to them, with the configured partitions and
//!   replication; a topic each reader reads whole (notices, an ingest's answers) with one
//!   partition.
//! - Producer: `acks=all`, idempotence on, a 1 ms linger (at 32 clients it gave 1.5x the
//!   throughput of none: fewer produce requests for the broker), Nagle off; `publish` returns
//!   once the broker acknowledged the record.
//! - Consumers: one group per role (`<prefix><group>`), a new group starts at the earliest
//!   record. A role's `commit` only *stores* the offset (local, no request: it marks every
//!   earlier record done, which the role's acknowledgement tracking guarantees); librdkafka
//!   commits what is stored every [`COMMIT_INTERVAL_MS`] and when partitions are revoked, and
//!   a synchronous `flush` commits it when a role drains. A commit per record was one broker
//!   request per call. What a crash can then redeliver (the last interval) is answered from
//!   the store, as before.
//! - Short fetch waits keep the request path fast (5 ms on `calls` and reply topics, 100 ms for
//!   consumers of the update topics alone), Nagle off; session timeouts are configurable (tests
//!   use 2 s so group joins take about a second).
//! - `depth` is the consumer lag this process's consumers see, from librdkafka's statistics
//!   (every 2 s).
//! - Topics a process both publishes and reads ([`KafkaConfig::local`]: in `telepipe serve`,
//!   `calls` and the file stages' inputs) are handed over ([`crate::handover`],
//!   [`crate::Handed`]): a record, once acknowledged, goes to the stage's consumer in the
//!   same process if that consumer reads its partition. A call then runs one broker
//!   acknowledgement after it arrived, not after the router's next fetch; its commit still
//!   waits for the fetch. Consumers of such topics fetch with a long wait
//!   ([`LOCAL_FETCH_WAIT_MS`]): their fetches bring the echoes of what was handed over and
//!   the records of other processes.

use crate::handover::Desk;
use crate::{Bus, BusError, Consumer, Depth, Handed, Record};
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

/// How often librdkafka commits the offsets the roles stored.
pub const COMMIT_INTERVAL_MS: u32 = 500;

/// How long a fetch waits at the broker for records before answering empty, on the request
/// path: a call's answer waits on two of these.
const FETCH_WAIT_MS: u32 = 5;

/// The same for consumers of the update topics only, whose records nobody waits on within
/// milliseconds: every idle consumer polls the broker once a wait, and on Tansu those polls
/// cost as much broker CPU as the calls (measured in `bench/`).
const BACKGROUND_FETCH_WAIT_MS: u32 = 100;

/// The same for consumers of topics published in their own process ([`KafkaConfig::local`]),
/// whose records mostly come handed over: their fetches bring the echoes, and the records of
/// publishers in other processes, which then wait up to this long on a broker that holds a
/// waiting fetch for its whole wait (Tansu; Apache Kafka answers one when records arrive).
/// With every request-path consumer at 5 ms, the idle polls of a `serve` process took Tansu
/// half a core; with these at 100 ms, a fifth.
pub const LOCAL_FETCH_WAIT_MS: u32 = 100;

/// How long a made topic may take to show in the broker's metadata before `ensure_topics`
/// fails (and its caller retries or stops).
const TOPIC_LISTED_WITHIN: Duration = Duration::from_secs(10);

/// How often a consumer asks the broker for its topics' metadata. A topic missing from it is
/// read from the first refresh that finds it: at librdkafka's default of five minutes, a
/// consumer that subscribed a moment before its topic showed stayed deaf to it that long
/// (measured on Tansu: 301 s). One request naming a consumer's topics every 5 s.
const METADATA_REFRESH_MS: u32 = 5_000;

/// Topics whose records can be handed over: the processing stages' inputs, which the
/// in-process bus pushes to its stages too (`Bus::push_to`). The stages run a bot's calls
/// concurrently (DESIGN invariant 2); the order they take calls in (a chat's flood control
/// turns) is the order the calls arrived, give or take what a hand-over changes: a record
/// handed over can overtake an earlier one of another process, or one that found the hand-over
/// full, as concurrent clients' calls overtake each other anyway. And `updates.kept`, which
/// wakes a router's waiting polls (a wake is a wake, in any order). Not flood control's
/// notices (`calls.cancel`, `flood.turns`): a router's pause and its end must not change
/// places, and their publishers (every ingest, the file stages) often run elsewhere, where a
/// local topic's long fetch wait would hold up their steps. Stages that keep order (webhook
/// deliveries) read their records in order only.
const HANDED_OVER: [&str; 5] = [
    crate::topics::CALLS,
    crate::topics::CALLS_FILES,
    crate::topics::CALLS_MEDIA,
    crate::topics::CALLS_SEND,
    crate::topics::UPDATES_KEPT,
];

fn fetch_wait_ms(topics: &[String], local: &[String]) -> u32 {
    let background = [crate::topics::UPDATES_RAW, crate::topics::UPDATES];
    if topics.iter().all(|t| background.contains(&t.as_str())) {
        BACKGROUND_FETCH_WAIT_MS
    } else if topics.iter().all(|t| local.contains(t)) {
        LOCAL_FETCH_WAIT_MS
    } else {
        FETCH_WAIT_MS
    }
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Prepended to every topic and group name, so deployments can share a cluster.
    pub prefix: String,
    pub partitions: i32,
    pub replication: i32,
    /// `client.id`, for the broker's logs.
    pub client_id: String,
    pub session_timeout_ms: u32,
    /// Topics this process both publishes and reads (its roles together: `calls` where the
    /// ingest and the router run, `calls.files` where the router and the files stage do...).
    /// A stage's input among them is handed over to it; their consumers fetch with
    /// [`LOCAL_FETCH_WAIT_MS`].
    pub local: Vec<String>,
}

impl KafkaConfig {
    /// Parses `kafka://host:port[,host:port]`.
    pub fn from_url(url: &str) -> Result<Self, BusError> {
        let brokers = url
            .strip_prefix("kafka://")
            .filter(|b| !b.is_empty())
            .ok_or_else(|| BusError::Backend(format!("not a kafka:// URL: {url}")))?;
        Ok(Self {
            brokers: brokers.trim_end_matches('/').to_owned(),
            prefix: "telepipe.".into(),
            partitions: 8,
            replication: 1,
            client_id: "telepipe".into(),
            session_timeout_ms: 10_000,
            local: Vec::new(),
        })
    }
}

pub struct KafkaBus {
    cfg: KafkaConfig,
    /// Replaced when it can deliver no more ([`producer_is_done`]); with when it was made.
    producer: RwLock<(Held, std::time::Instant)>,
    /// Shared with the blocking thread that waits for a made topic to show in the metadata.
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Consumer lag by (topic, group), from librdkafka's statistics of this process's
    /// consumers.
    lags: Lags,
    /// This process's consumers of topics handed over, by topic.
    desks: Mutex<HashMap<String, Vec<Weak<Desk>>>>,
    /// Topics this process made or found made (`ensure_topics`, or a first publish). A publish
    /// to another makes it first: else the broker would make it itself on the producer's
    /// metadata request, with its own default partitions (Tansu's: four), before the readers'
    /// `ensure_topics` (a files stage's `flood.turns` before its process's flood watcher).
    /// Bounded by the topics a process publishes to: fixed names, and the reply topic of each
    /// ingest instance whose calls it answered (`responses.<instance>`, named by the ingest in
    /// the call's envelope; made even where the broker does not make topics itself).
    made: RwLock<HashSet<String>>,
}

type Lags = Arc<Mutex<HashMap<(String, String), u64>>>;

/// A consumer's context: turns librdkafka's periodic statistics into the lag of its group.
struct LagContext {
    group: String,
    prefix: String,
    lags: Lags,
    /// The consumer's hand-over desks with their topics' full names, one for each topic it
    /// reads that is handed over: told of the partitions the consumer gains and loses.
    desks: Vec<(String, Arc<Desk>)>,
}

impl LagContext {
    fn partitions<'a>(
        &'a self,
        list: &'a rdkafka::TopicPartitionList,
    ) -> impl Iterator<Item = (&'a Desk, Vec<u32>)> + 'a {
        self.desks.iter().map(move |(topic, desk)| {
            let partitions = list
                .elements_for_topic(topic)
                .iter()
                .map(|e| e.partition().max(0) as u32)
                .collect();
            (desk.as_ref(), partitions)
        })
    }
}

impl ClientContext for LagContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        let mut lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in stats.topics {
            let Some(name) = name.strip_prefix(&self.prefix) else {
                continue;
            };
            let lag: i64 = topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum();
            lags.insert((name.to_owned(), self.group.clone()), lag.max(0) as u64);
        }
    }
}

impl ConsumerContext for LagContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            for (desk, partitions) in self.partitions(list) {
                desk.revoked(partitions);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            for (desk, partitions) in self.partitions(list) {
                desk.assigned(partitions);
            }
        }
    }
}

fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::Backend(e.to_string())
}

/// A failed produce: a delivery that timed out, was purged in flight or cancelled may have
/// reached the broker (librdkafka cannot tell), so it is unconfirmed; a record refused or never
/// sent is a plain failure.
fn publish_error(e: rdkafka::error::KafkaError) -> BusError {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    match &e {
        KafkaError::MessageProduction(
            Code::MessageTimedOut
            | Code::RequestTimedOut
            | Code::OperationTimedOut
            | Code::PurgeInflight,
        )
        | KafkaError::Canceled => BusError::Unconfirmed(e.to_string()),
        _ => backend(e),
    }
}

/// The producer of a process: acknowledged by every replica, idempotent (a retried record is
/// stored once, in order).
fn new_producer(cfg: &KafkaConfig) -> Result<FutureProducer, BusError> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(backend)
}

/// A hold on the producer: the last hold on a replaced one drops it off the async threads (a
/// drop purges and flushes it, up to 500 ms, and joins librdkafka's threads).
struct Held(Option<Arc<FutureProducer>>);

impl Held {
    fn same(&self, other: &Held) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::ops::Deref for Held {
    type Target = FutureProducer;
    fn deref(&self) -> &FutureProducer {
        self.0.as_deref().expect("held until dropped")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(last) = self.0.take().and_then(Arc::into_inner) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(last))),
            Err(_) => drop(last),
        }
    }
}

/// How often a producer is replaced at most ([`KafkaBus::renew_producer`]).
const RENEWED_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Whether a producer that failed a record so can deliver no more, whatever it is given: the
/// broker fences its producer id (Tansu, from the first record after an outage in which one
/// timed out: librdkafka bumps the id's epoch, and Tansu refuses every record of the bumped
/// one; the gateway answered 503 to every call after until restarted), or librdkafka calls it
/// fatal (it then refuses every record before sending it). A new producer, with a new id,
/// delivers again.
fn producer_is_done(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error,
        KafkaError::MessageProduction(
            Code::ProducerFenced | Code::InvalidProducerEpoch | Code::Fatal
        )
    )
}

impl KafkaBus {
    pub fn new(cfg: KafkaConfig) -> Result<Self, BusError> {
        let producer = new_producer(&cfg)?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .set("client.id", &cfg.client_id)
            // The admin client is a producer to librdkafka, whose metadata requests would ask
            // the broker to make the topics they name (`wait_until_listed` names topics).
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(backend)?;
        Ok(Self {
            cfg,
            producer: RwLock::new((Held(Some(Arc::new(producer))), std::time::Instant::now())),
            admin: Arc::new(admin),
            lags: Arc::default(),
            desks: Mutex::default(),
            made: RwLock::default(),
        })
    }

    fn producer(&self) -> Held {
        let slot = self.producer.read().unwrap_or_else(|p| p.into_inner());
        Held(slot.0 .0.clone())
    }

    /// Puts a new producer in the place of `done`, unless another publish did already or the
    /// one in place is not a second old (a broker that refuses every producer gets a new one
    /// a second, not one a call). Whether the one in place now is another than `done`.
    fn renew_producer(&self, done: &Held, error: &KafkaError) -> Result<bool, BusError> {
        let is_done = |slot: &(Held, std::time::Instant)| slot.0.same(done);
        {
            let slot = self.producer.read().unwrap_or_else(|p| p.into_inner());
            if !is_done(&slot) {
                return Ok(true);
            }
            if slot.1.elapsed() < RENEWED_AT_MOST_EVERY {
                return Ok(false);
            }
        }
        let fresh = Held(Some(Arc::new(new_producer(&self.cfg)?)));
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if is_done(&slot) {
            tracing::warn!(%error, "the Kafka producer can deliver no more; replaced");
            *slot = (fresh, std::time::Instant::now());
        }
        Ok(true)
    }

    /// What every topic and group name of this bus starts with.
    pub fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    fn full(&self, topic: &str) -> String {
        format!("{}{topic}", self.cfg.prefix)
    }

    /// The partitions a topic is created with: one for a topic each reader reads whole
    /// ([`crate::topics::read_whole`]). On Tansu a fetch reads every partition of its topics
    /// at the start and at the end of its wait, and a `serve` process's notice consumers
    /// fetch every few milliseconds: with eight partitions each, an idle `serve` took the
    /// broker 26% of a core, with one 14% (`bench/README.md`). Topics made before keep theirs.
    fn partitions_of(&self, topic: &str) -> i32 {
        if crate::topics::read_whole(topic) {
            1
        } else {
            self.cfg.partitions
        }
    }

    /// Makes `topic` with its partitions if this process has not made or found it yet. A
    /// failure fails the publish (retried as any failed publish): producing anyway would let
    /// the broker make the topic with its own default partitions, which cannot be lowered
    /// after. Every role's start makes its topics the same way, so a broker that refuses to
    /// make topics runs no telepipe in the first place.
    async fn make_before_publishing(&self, topic: &str) -> Result<(), BusError> {
        if self
            .made
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic)
        {
            return Ok(());
        }
        self.ensure_topics(&[topic.to_owned()]).await
    }

    /// Waits until the broker's metadata lists each of `names` with its partitions. A made
    /// topic is not at once in every broker's metadata (Kafka spreads it from the controller;
    /// Tansu can answer from a stale cache of its topics for up to 5 s), and a consumer whose
    /// first metadata misses a topic is deaf to it until its next refresh. A failed request
    /// counts as not listed yet: only the deadline fails the wait.
    async fn wait_until_listed(&self, names: Vec<String>) -> Result<(), BusError> {
        let admin = self.admin.clone();
        // librdkafka's metadata request blocks: off the async threads.
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + TOPIC_LISTED_WITHIN;
            let mut pause = Duration::from_millis(50);
            let mut missing: Vec<String> = names;
            let mut last_error = None;
            loop {
                let mut still = Vec::new();
                for name in missing {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let wait = Timeout::After(left.clamp(Duration::from_millis(100), pause * 20));
                    match admin.inner().fetch_metadata(Some(&name), wait) {
                        Ok(meta)
                            if meta.topics().iter().any(|t| {
                                t.name() == name
                                    && t.error().is_none()
                                    && !t.partitions().is_empty()
                            }) => {}
                        Ok(_) => still.push(name),
                        Err(error) => {
                            last_error = Some(error);
                            still.push(name);
                        }
                    }
                }
                if still.is_empty() {
                    return Ok(());
                }
                if std::time::Instant::now() + pause >= deadline {
                    let error = last_error
                        .map(|e| format!(" (last: {e})"))
                        .unwrap_or_default();
                    return Err(BusError::Backend(format!(
                        "made but not in the broker's metadata after \
                         {TOPIC_LISTED_WITHIN:?}: {still:?}{error}"
                    )));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
                missing = still;
            }
        })
        .await
        .map_err(backend)?
    }

    /// Hands a record the broker acknowledged to this process's consumers of its topic that
    /// read its partition.
    fn hand_over(&self, topic: &str, partition: i32, offset: i64, key: &str, payload: Vec<u8>) {
        // A delivery without a place (never with `acks=all` and idempotence): the fetch brings
        // it.
        if partition < 0 || offset < 0 {
            return;
        }
        let mut desks = self.desks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = desks.get_mut(topic) else {
            return;
        };
        list.retain(|d| d.strong_count() > 0);
        let payload = Bytes::from(payload);
        for desk in list.iter().filter_map(Weak::upgrade) {
            if desk.offer(partition as u32, offset as u64, key, payload.clone()) {
                crate::metrics::HANDED_OVER
                    .with_label_values(&[crate::topics::label(topic)])
                    .inc();
            }
        }
    }
}

impl KafkaBus {
    /// Joins `group` on `topics`; a new group starts where `reset` says (`earliest`, `latest`).
    fn join(
        &self,
        group: &str,
        topics: &[String],
        reset: &str,
    ) -> Result<Box<dyn Consumer>, BusError> {
        // Only a consumer that reads everything from where its group stands is handed records:
        // one reading from the end must not get one its fetch would have skipped.
        let bell = Arc::new(tokio::sync::Notify::new());
        let desks: Vec<Arc<Desk>> = topics
            .iter()
            .filter(|t| {
                reset == "earliest"
                    && HANDED_OVER.contains(&t.as_str())
                    && self.cfg.local.contains(t)
            })
            .map(|topic| {
                let desk = Arc::new(Desk::new(topic, bell.clone()));
                self.desks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(topic.clone())
                    .or_default()
                    .push(Arc::downgrade(&desk));
                desk
            })
            .collect();
        let context = LagContext {
            group: group.to_owned(),
            prefix: self.cfg.prefix.clone(),
            lags: self.lags.clone(),
            desks: desks
                .iter()
                .map(|d| (self.full(d.topic()), d.clone()))
                .collect(),
        };
        let consumer: StreamConsumer<LagContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.brokers)
            .set("client.id", &self.cfg.client_id)
            .set("group.id", self.full(group))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS.to_string())
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("enable.partition.eof", "false")
            .set(
                "fetch.wait.max.ms",
                fetch_wait_ms(topics, &self.cfg.local).to_string(),
            )
            .set("socket.nagle.disable", "true")
            .set(
                "session.timeout.ms",
                self.cfg.session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.cfg.session_timeout_ms / 4).max(100).to_string(),
            )
            .set("statistics.interval.ms", "2000")
            .set(
                "topic.metadata.refresh.interval.ms",
                METADATA_REFRESH_MS.to_string(),
            )
            .create_with_context(context)
            .map_err(backend)?;
        let names: Vec<String> = topics.iter().map(|t| self.full(t)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&refs).map_err(backend)?;
        Ok(Box::new(KafkaConsumer {
            consumer,
            prefix: self.cfg.prefix.clone(),
            stored: false,
            desks,
            bell,
            topics: names,
            told: Vec::new(),
        }))
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let names: Vec<(String, i32)> = topics
            .iter()
            .map(|t| (self.full(t), self.partitions_of(t)))
            .collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|(n, partitions)| {
                NewTopic::new(
                    n,
                    *partitions,
                    TopicReplication::Fixed(self.cfg.replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&new, &opts)
            .await
            .map_err(backend)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Backend(format!("creating topic {name}: {code}")))
                }
            }
        }
        self.wait_until_listed(names.into_iter().map(|(n, _)| n).collect())
            .await?;
        self.made
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(topics.iter().cloned());
        Ok(())
    }

    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError> {
        self.make_before_publishing(topic).await?;
        let full = self.full(topic);
        let send = |producer: Held| {
            let record = FutureRecord::to(&full).key(key).payload(&payload);
            async move {
                let sent = producer
                    .send(record, Timeout::After(Duration::from_secs(30)))
                    .await
                    .map_err(|(e, _)| e);
                (sent, producer)
            }
        };
        let sent = std::time::Instant::now();
        let delivered = match send(self.producer()).await {
            (Ok(delivered), _) => delivered,
            (Err(error), done) if producer_is_done(&error) => {
                if !self.renew_producer(&done, &error)? {
                    return Err(publish_error(error));
                }
                // Refused (by the broker, or by librdkafka before sending it): not stored, so
                // once more on the new producer.
                send(self.producer()).await.0.map_err(publish_error)?
            }
            (Err(error), _) => return Err(publish_error(error)),
        };
        crate::metrics::PUBLISH_SECONDS.observe(sent.elapsed().as_secs_f64());
        self.hand_over(topic, delivered.partition, delivered.offset, key, payload);
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.join(group, topics, "earliest")
    }

    async fn subscribe_from_end(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.join(group, topics, "latest")
    }

    fn depth(&self) -> Vec<Depth> {
        let lags = self.lags.lock().unwrap_or_else(|p| p.into_inner());
        lags.iter()
            .map(|((topic, group), records)| Depth {
                topic: topic.clone(),
                group: group.clone(),
                records: *records,
            })
            .collect()
    }
}

struct KafkaConsumer {
    consumer: StreamConsumer<LagContext>,
    prefix: String,
    /// An offset was stored: `flush` has something to commit.
    stored: bool,
    /// Where records of its topics published in this process are handed to it.
    desks: Vec<Arc<Desk>>,
    /// Rung by its desks when they queue something.
    bell: Arc<tokio::sync::Notify>,
    /// Its topics (full names), for its warnings (librdkafka's error says which topic;
    /// rdkafka keeps only its code).
    topics: Vec<String>,
    /// The errors it was told of since its last record: each kind, how often, and when it was
    /// last warned of (once a minute; at debug between).
    told: Vec<(RDKafkaErrorCode, u64, std::time::Instant)>,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Record, BusError> {
        loop {
            // What was handed over (and the notices of what was read) before the broker.
            if let Some(r) = self.desks.iter().find_map(|d| d.next_ready()) {
                return Ok(r);
            }
            let m = if self.desks.is_empty() {
                self.consumer.recv().await
            } else {
                tokio::select! {
                    biased;
                    _ = self.bell.notified() => continue,
                    m = self.consumer.recv() => m,
                }
            };
            let m = match m {
                Ok(m) => m,
                Err(KafkaError::MessageConsumption(code)) if !stops_consumer(code) => {
                    self.tell(code);
                    continue;
                }
                Err(e) => return Err(backend(e)),
            };
            self.told.clear();
            let Some(topic) = m.topic().strip_prefix(&self.prefix) else {
                continue;
            };
            let (partition, offset) = (m.partition().max(0) as u32, m.offset().max(0) as u64);
            let payload = m.payload().unwrap_or_default();
            if let Some(desk) = self.desks.iter().find(|d| d.topic() == topic) {
                if !desk.read(partition, offset, payload) {
                    continue;
                }
            }
            return Ok(Record {
                topic: topic.to_owned(),
                partition,
                offset,
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: Bytes::copy_from_slice(payload),
                value: None,
                handed: Handed::Read,
            });
        }
    }

    async fn commit(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), BusError> {
        let full = format!("{}{topic}", self.prefix);
        // Stores `offset + 1` for the next automatic commit.
        match self
            .consumer
            .store_offset(&full, partition as i32, offset as i64)
        {
            Ok(()) => self.stored = true,
            // After a rebalance the partition may belong to another member: its work will be
            // redone from the last commit, which the store makes harmless.
            Err(error) => tracing::warn!(%error, topic, partition, offset, "offset not stored"),
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BusError> {
        if !self.stored {
            return Ok(());
        }
        // A synchronous commit blocks this thread for one broker round trip; it runs once,
        // at shutdown.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // The automatic commit took every stored offset already: nothing left to commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "final offset commit refused"),
        }
        Ok(())
    }
}

impl KafkaConsumer {
    /// Counts an error passed, and warns of it the first time since the last record and once
    /// a minute after (librdkafka retries a failed fetch every half second).
    fn tell(&mut self, code: RDKafkaErrorCode) {
        crate::metrics::CONSUMER_ERRORS
            .with_label_values(&[&format!("{code:?}")])
            .inc();
        let now = std::time::Instant::now();
        let (times, warn) = match self.told.iter_mut().find(|(c, ..)| *c == code) {
            Some((_, times, warned)) => {
                *times += 1;
                let warn = now.duration_since(*warned) >= Duration::from_secs(60);
                if warn {
                    *warned = now;
                }
                (*times, warn)
            }
            None => {
                self.told.push((code, 1, now));
                (1, true)
            }
        };
        let (error, topics) = (KafkaError::MessageConsumption(code), &self.topics);
        if warn {
            tracing::warn!(%error, times, ?topics, "consumer error; passed, as librdkafka retries");
        } else {
            tracing::debug!(%error, times, ?topics, "consumer error again");
        }
    }
}

/// Whether a consumer error stops the consumer (and with it its process) rather than pass.
/// librdkafka reports an error it recovers from itself as one too, and retries: a fetch that
/// failed (the broker's error on a partition, or a request timed out), a topic not in its
/// metadata yet (made by another process a moment before, still spreading through a cluster,
/// or missing from Tansu's stale metadata cache for up to 5 s: that stopped a router under CI),
/// read from the refresh that finds it (a consumer from the end from where the topic stands
/// then). What only someone can mend stops: access refused, a group the broker will not let
/// it join (a session timeout outside the broker's bounds, a protocol or version it does not
/// speak: librdkafka would retry the join for ever), and a partition gone under its consumer
/// (its topic deleted; made again with its partitions by the restart's `ensure_topics`).
/// Fatal errors (`MessageConsumptionFatal`) stop too. An error that persists otherwise is
/// warned of once a minute and counted (`telepipe_bus_consumer_errors_total`).
fn stops_consumer(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::UnknownPartition
            | Code::InvalidSessionTimeout
            | Code::InconsistentGroupProtocol
            | Code::InvalidGroupId
            | Code::UnsupportedVersion
            | Code::Fatal
    )
}

/// A topic read once from a moment in time to its end as it was when the read began, by a
/// consumer that belongs to no group's work: it is assigned every partition, commits nothing,
/// and so disturbs no role (`telepipe replay --from-bus`).
pub struct TopicReader {
    consumer: StreamConsumer,
    prefix: String,
    /// Partition not yet read to its end → its high watermark when the read began.
    ends: HashMap<i32, i64>,
    /// Partitions read to their high watermark, still taking what the broker delivers with
    /// them (see [`TopicReader::next`]).
    tails: std::collections::HashSet<i32>,
    /// When the read began, plus [`CLOCK_SKEW_MS`]: a record stamped later was published
    /// after it (the stamp is the producer's clock).
    began_ms: i64,
    /// When waiting for one more record of the tails ends (set when the wait starts, cleared
    /// by each record a tail gives).
    tail_deadline: Option<tokio::time::Instant>,
    /// The topic's full name, to pause partitions that are done.
    topic: String,
}

/// How far a producer's clock may be ahead of the reader's without a record of the last batch
/// being taken for one published after the read began.
const CLOCK_SKEW_MS: i64 = 1_000;

/// How long a reader whose every partition is past its high watermark waits for one more
/// record before it calls the read done.
const TAIL_GRACE: Duration = Duration::from_millis(250);

impl KafkaBus {
    /// Reads `topic` to its end as of now: from the first record at `since_ms` (by the broker's
    /// time index, a minute early), or from the earliest record kept. A caller skips what is
    /// older than it wants by the records' own times.
    pub async fn read_to_end(
        &self,
        topic: &str,
        since_ms: Option<i64>,
    ) -> Result<TopicReader, BusError> {
        let cfg = self.cfg.clone();
        let full = self.full(topic);
        // librdkafka's metadata and offset lookups block: off the async threads.
        tokio::task::spawn_blocking(move || -> Result<TopicReader, BusError> {
            let wait = Timeout::After(Duration::from_secs(10));
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &cfg.brokers)
                .set("client.id", &cfg.client_id)
                // A group of its own that never commits: nothing of the roles' moves.
                .set(
                    "group.id",
                    format!(
                        "{}replay-{}-{}",
                        cfg.prefix,
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or(0)
                    ),
                )
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                .create()
                .map_err(backend)?;
            let meta = consumer
                .fetch_metadata(Some(&full), wait)
                .map_err(backend)?;
            let partitions: Vec<i32> = meta
                .topics()
                .iter()
                .filter(|t| t.name() == full)
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            // Taken before the watermarks: what is stamped after was published after them.
            let began_ms = schemas::now_ms() + CLOCK_SKEW_MS;
            let mut ends = HashMap::new();
            let mut lows = HashMap::new();
            for &p in &partitions {
                let (low, high) = consumer.fetch_watermarks(&full, p, wait).map_err(backend)?;
                if high > low {
                    ends.insert(p, high);
                    lows.insert(p, low);
                }
            }
            // Where each partition starts: the time index's offset for a minute before
            // `since_ms` (producers' clocks and record times differ); the earliest record where
            // the index has nothing to say.
            let mut starts: HashMap<i32, rdkafka::Offset> = ends
                .keys()
                .map(|p| (*p, rdkafka::Offset::Beginning))
                .collect();
            if let Some(since) = since_ms {
                let mut ask = rdkafka::TopicPartitionList::new();
                for &p in ends.keys() {
                    ask.add_partition_offset(&full, p, rdkafka::Offset::Offset(since - 60_000))
                        .map_err(backend)?;
                }
                let found = consumer.offsets_for_times(ask, wait).map_err(backend)?;
                for e in found.elements() {
                    let low = lows.get(&e.partition()).copied().unwrap_or(0);
                    let start = match e.offset() {
                        rdkafka::Offset::Offset(o) => rdkafka::Offset::Offset(o.max(low)),
                        // Every record is older than asked for: nothing to read here.
                        rdkafka::Offset::End => rdkafka::Offset::End,
                        _ => rdkafka::Offset::Beginning,
                    };
                    if start == rdkafka::Offset::End {
                        ends.remove(&e.partition());
                    }
                    starts.insert(e.partition(), start);
                }
            }
            let mut assign = rdkafka::TopicPartitionList::new();
            for &p in ends.keys() {
                assign
                    .add_partition_offset(&full, p, starts[&p])
                    .map_err(backend)?;
            }
            consumer.assign(&assign).map_err(backend)?;
            Ok(TopicReader {
                consumer,
                prefix: cfg.prefix.clone(),
                ends,
                tails: Default::default(),
                began_ms,
                tail_deadline: None,
                topic: full.clone(),
            })
        })
        .await
        .map_err(backend)?
    }
}

impl TopicReader {
    /// The next record, or `None` once every partition was read to its end.
    ///
    /// A partition's end is its high watermark when the read began, and then whatever the
    /// broker delivers with it that was stamped before the read began: Tansu reports as high
    /// watermark the first offset of a partition's last batch plus one, so a watermark alone
    /// left the rest of that batch unread (1,002 of 1,008 records published by concurrent
    /// senders). Once every partition is past its watermark, the read ends at the first record
    /// stamped after it began or after [`TAIL_GRACE`] without one.
    pub async fn next(&mut self) -> Result<Option<Record>, BusError> {
        loop {
            if self.ends.is_empty() && self.tails.is_empty() {
                return Ok(None);
            }
            let m = if self.ends.is_empty() {
                // Records of partitions already done do not put the end off.
                let deadline = *self
                    .tail_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + TAIL_GRACE);
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(m) => m.map_err(backend)?,
                    Err(_) => {
                        self.tails.clear();
                        continue;
                    }
                }
            } else {
                self.consumer.recv().await.map_err(backend)?
            };
            let p = m.partition();
            let within = match self.ends.get(&p) {
                Some(&end) => {
                    if m.offset() + 1 >= end {
                        self.ends.remove(&p);
                        self.tails.insert(p);
                    }
                    m.offset() < end
                }
                None => false,
            };
            if !within {
                if !self.tails.contains(&p) {
                    continue;
                }
                if m.timestamp().to_millis().is_some_and(|t| t > self.began_ms) {
                    // Published after the read began: this partition is done.
                    self.tails.remove(&p);
                    let mut done = rdkafka::TopicPartitionList::new();
                    done.add_partition(&self.topic, p);
                    let _ = self.consumer.pause(&done);
                    continue;
                }
                self.tail_deadline = None;
            }
            let Some(topic) = m.topic().strip_prefix(&self.prefix) else {
                continue;
            };
            return Ok(Some(Record {
                topic: topic.to_owned(),
                partition: p.max(0) as u32,
                offset: m.offset().max(0) as u64,
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                value: None,
                handed: Handed::Read,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_errors_someone_must_mend_stop_a_consumer() {
        use rdkafka::error::RDKafkaErrorCode as Code;
        for passes in [
            Code::UnknownTopicOrPartition,
            Code::UnknownTopic,
            Code::BrokerTransportFailure,
            Code::AllBrokersDown,
            Code::RequestTimedOut,
            Code::Unknown,
            Code::NotLeaderForPartition,
            Code::PollExceeded,
        ] {
            assert!(!super::stops_consumer(passes), "{passes:?}");
        }
        for stops in [
            Code::TopicAuthorizationFailed,
            Code::GroupAuthorizationFailed,
            Code::UnknownPartition,
            Code::InvalidSessionTimeout,
        ] {
            assert!(super::stops_consumer(stops), "{stops:?}");
        }
    }

    /// Only consumers of the update topics alone, or of topics published in their own
    /// process, wait long; anything else on the request path waits little.
    #[test]
    fn background_and_local_consumers_wait_longer() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = &[];
        assert_eq!(super::fetch_wait_ms(&t(&["updates.raw"]), none), 100);
        assert_eq!(super::fetch_wait_ms(&t(&["updates"]), none), 100);
        assert_eq!(super::fetch_wait_ms(&t(&["calls"]), none), 5);
        assert_eq!(
            super::fetch_wait_ms(&t(&["responses.a", "updates"]), none),
            5
        );
        let local = t(&["calls", "responses.a"]);
        assert_eq!(super::fetch_wait_ms(&t(&["calls"]), &local), 100);
        assert_eq!(super::fetch_wait_ms(&t(&["responses.a"]), &local), 100);
        assert_eq!(super::fetch_wait_ms(&t(&["calls.files"]), &local), 5);
    }

    /// A delivery that timed out may have reached the broker: unconfirmed, not failed.
    #[test]
    fn timed_out_deliveries_are_unconfirmed() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
        let e = super::publish_error(KafkaError::MessageProduction(Code::MessageTimedOut));
        assert!(e.may_have_been_stored(), "{e}");
        let e = super::publish_error(KafkaError::MessageProduction(Code::MessageSizeTooLarge));
        assert!(!e.may_have_been_stored(), "{e}");
        assert!(e.is_retriable());
        let e = super::publish_error(KafkaError::MessageProduction(Code::QueueFull));
        assert!(!e.may_have_been_stored(), "{e}");
    }
}
