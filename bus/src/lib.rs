//! The bus: named topics of keyed records, per-key order, consumer groups, commits.
//!
//! Records flow ingest → `calls` → processors → `responses.<instance>` → egress. The [`Bus`]
//! trait is what roles see; [`memory::MemoryBus`] is the in-process implementation used by
//! `telepipe serve` in embedded mode; [`kafka::KafkaBus`] runs the roles apart on a broker. Consumers commit an offset only when every record before it is finished
//! ([`offsets::OffsetTracker`]), so a crash re-delivers, never skips.
//!
//! # Layout
//! - [`memory`]: the in-process bus.
//! - [`kafka`]: the Kafka bus (rdkafka); [`handover`]: its records handed over in-process.
//! - [`testsuite`]: the contract every implementation passes.
//! - [`offsets`]: acknowledgement tracking for concurrent processing.
//! - [`reply`]: request–reply correlation by call id.
//! - [`topics`]: topic names.
//! - [`metrics`]: the bus's Prometheus metrics.

pub mod handover;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod offsets;
pub mod reply;
pub mod stage;
pub mod testsuite;
pub mod topics;

use async_trait::async_trait;
use bytes::Bytes;
use schemas::{Envelope, Payload};
use std::any::Any;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("bus backend error: {0}")]
    Backend(String),
    /// The bus took the record but never confirmed storing it (Kafka: the delivery timed out
    /// after the record may have reached the broker). It may be stored, and be read.
    #[error("the bus did not confirm the record: {0}")]
    Unconfirmed(String),
}

impl BusError {
    /// Whether trying again can help (a broker hiccup) or not (a closed bus, a bad topic).
    /// Trying an unconfirmed record again may store it twice.
    pub fn is_retriable(&self) -> bool {
        matches!(self, BusError::Backend(_) | BusError::Unconfirmed(_))
    }

    /// Whether a record whose publish failed may still have been stored (and be acted on):
    /// then what it asked for may or may not happen, and a caller must not be told it did not.
    pub fn may_have_been_stored(&self) -> bool {
        matches!(self, BusError::Unconfirmed(_))
    }
}

/// A record as its producer built it (an `Envelope<P>`), on a bus that
/// [carries values](Bus::carries_values).
pub type Value = Arc<dyn Any + Send + Sync>;

/// A stage that takes a topic's records from their publishers directly ([`Bus::push_to`]).
#[derive(Clone)]
pub struct Push {
    /// The stage's consumer group: what it would read the topic as (the depth gauge's label).
    pub group: String,
    /// Records handed over and not done yet (waiting for a slot, or running): the depth.
    pub pending: Arc<std::sync::atomic::AtomicU64>,
    /// Takes a record: starts its work, or queues it for the next free slot. Never waits, so a
    /// publisher is never held up (nor a record lost with a publisher that goes away).
    pub take: Arc<dyn Fn(Record) + Send + Sync>,
}

/// One record as a consumer sees it.
#[derive(Clone)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    /// The encoded record (empty when the bus carried `value` instead).
    pub payload: Bytes,
    /// The record itself, on a bus that carries values: [`decode_or_skip`] takes it as it is.
    pub value: Option<Value>,
    /// How it reached its consumer: read from the log, or handed over by a publisher in this
    /// process (the Kafka bus: see [`Handed`]).
    pub handed: Handed,
}

/// How a record reached its consumer. The Kafka bus hands a record of a topic on the request
/// path (`calls`) to a consumer of it in the publisher's own process as soon as the broker
/// has acknowledged it, if that consumer reads the record's partition: it is in the log of
/// record then (invariant 1), and its work need not wait for the consumer's fetch to reach it
/// (Tansu answers a waiting fetch only when its wait ends: milliseconds a call). The fetch
/// still reaches it later, in its place; only then may its offset be committed, so a crash
/// redelivers rather than skips (`stage::run` keeps the two apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Handed {
    /// Read from the log in partition order, as usual.
    #[default]
    Read,
    /// Handed over by its publisher ahead of the fetch: do its work, but do not count it as
    /// read (its commit waits for its `Echo`).
    Early,
    /// The fetch reached a record handed over `Early` (same partition and offset; no payload):
    /// read now, its work already started.
    Echo,
    /// A record handed over `Early` that this consumer's fetch will not reach (its partition
    /// went to another member of the group, or the fetch moved past it): not this consumer's
    /// to commit, whatever its work did. No payload.
    Lost,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key)
            .field("payload_len", &self.payload.len())
            .field("value", &self.value.is_some())
            .field("handed", &self.handed)
            .finish()
    }
}

/// How many records wait unconsumed or uncommitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Depth {
    pub topic: String,
    pub group: String,
    pub records: u64,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Creates the topics that do not exist yet.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError>;

    /// Appends a record; returns once the bus holds it durably (acked).
    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(), BusError>;

    /// Joins `group` on `topics`. Members of one group share the partitions; a new group starts
    /// at the earliest record still held.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError>;

    /// Joins `group` on `topics` as [`Bus::subscribe`] does, but a new group starts after the
    /// last record: it reads only what is published from then on (notices that matter only
    /// while they are fresh, read by a group of one process's own).
    async fn subscribe_from_end(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError>;

    /// Records not yet committed, per topic and group (for the bus depth gauge).
    fn depth(&self) -> Vec<Depth> {
        Vec::new()
    }

    /// Whether this bus hands records to readers as the values their producers built: the
    /// in-process bus, whose readers share the producer's memory, so encoding a record only to
    /// decode it again a few microseconds later is work for nothing (two fifths of what the
    /// bus cost a call). [`publish_envelope`] then publishes values, [`decode_or_skip`] takes
    /// them. Buses between processes carry bytes.
    fn carries_values(&self) -> bool {
        false
    }

    /// Whether a stage in this process may take a topic's records from their publishers as they
    /// are published ([`Bus::push_to`]) rather than through a consumer: the in-process bus,
    /// where the records die with the process whichever way they go, so keeping each in a log
    /// only for a task to be woken to read it costs a call two task hand-offs and buys nothing.
    fn pushes(&self) -> bool {
        false
    }

    /// From now on, hands each record published to `topic` to `to` as it is published, first
    /// the records held now, in order (`None`: stops). Records are kept only for the topic's
    /// groups, if it has any besides the stage. Only on a bus that [pushes](Bus::pushes)
    /// ([`stage::run_pushed`]).
    fn push_to(&self, topic: &str, to: Option<Push>) {
        let _ = (topic, to);
    }

    /// Appends a value; only on a bus that [carries values](Bus::carries_values).
    async fn publish_value(&self, topic: &str, key: &str, value: Value) -> Result<(), BusError> {
        let _ = (key, value);
        Err(BusError::Backend(format!(
            "this bus carries bytes, not values (topic {topic})"
        )))
    }
}

#[async_trait]
pub trait Consumer: Send {
    /// The next record of an assigned partition, in partition order. Cancel-safe.
    async fn next(&mut self) -> Result<Record, BusError>;

    /// Marks every record of `partition` up to and including `offset` as done.
    async fn commit(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), BusError>;

    /// Makes every commit so far durable before returning (commits may be asynchronous);
    /// called when a role drains.
    async fn flush(&mut self) -> Result<(), BusError> {
        Ok(())
    }
}

/// Publishes an envelope keyed by its bot id: encoded, or as it is on a bus that
/// [carries values](Bus::carries_values).
pub async fn publish_envelope<P: Payload + Clone + Send + Sync + 'static>(
    bus: &dyn Bus,
    topic: &str,
    env: &Envelope<P>,
) -> Result<(), BusError> {
    if bus.carries_values() {
        return publish_envelope_owned(bus, topic, env.clone()).await;
    }
    count_published(topic);
    bus.publish(topic, &env.header.bot_id.key(), env.encode())
        .await
}

/// [`publish_envelope`] of an envelope its publisher is done with: on a bus that carries
/// values it is moved onto the bus, not copied (a call's copy was a third of what the
/// in-process bus cost it: its strings and its parameters, allocated again).
pub async fn publish_envelope_owned<P: Payload + Send + Sync + 'static>(
    bus: &dyn Bus,
    topic: &str,
    env: Envelope<P>,
) -> Result<(), BusError> {
    count_published(topic);
    let key = env.header.bot_id.key();
    if bus.carries_values() {
        return bus.publish_value(topic, &key, Arc::new(env)).await;
    }
    bus.publish(topic, &key, env.encode()).await
}

fn count_published(topic: &str) {
    metrics::published(topics::label_index(topic)).inc();
}

/// [`decode_or_skip`] of a record its consumer is done with: a value nobody else holds (no
/// other group reads the topic) is taken, not copied.
pub fn take_or_skip<P: Payload + Clone + Send + Sync + 'static>(
    mut record: Record,
) -> Option<Envelope<P>> {
    match record.value.take().map(|v| v.downcast::<Envelope<P>>()) {
        Some(Ok(env)) => Some(Arc::try_unwrap(env).unwrap_or_else(|shared| (*shared).clone())),
        Some(Err(other)) => {
            record.value = Some(other);
            decode_or_skip(&record)
        }
        None => decode_or_skip(&record),
    }
}

/// Decodes a record, or counts and logs why it is skipped (unknown version, wrong kind,
/// garbage). Never guesses. A record carried as a value is taken as it is (a copy: other
/// groups may read it too), if it is a `P`.
pub fn decode_or_skip<P: Payload + Clone + 'static>(record: &Record) -> Option<Envelope<P>> {
    if let Some(value) = &record.value {
        if let Some(env) = value.downcast_ref::<Envelope<P>>() {
            return Some(env.clone());
        }
        metrics::SKIPPED
            .with_label_values(&[topics::label(&record.topic), "wrong_kind"])
            .inc();
        tracing::warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            expected = P::KIND.as_str(),
            "skipping a record of another kind"
        );
        return None;
    }
    match Envelope::<P>::decode(&record.payload) {
        Ok(env) => Some(env),
        Err(error) => {
            let reason = match &error {
                schemas::DecodeError::UnknownVersion(_) => "unknown_version",
                schemas::DecodeError::WrongKind { .. } => "wrong_kind",
                schemas::DecodeError::Json(_) => "malformed",
            };
            metrics::SKIPPED
                .with_label_values(&[topics::label(&record.topic), reason])
                .inc();
            tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                %error,
                "skipping a record this build cannot read"
            );
            None
        }
    }
}
