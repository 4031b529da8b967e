//! The bus: named topics of keyed records, per-key order, consumer groups, commits.
//!
//! Records flow ingest → `calls` → processors → `responses.<instance>` → egress. The [`Bus`]
//! trait is what roles see; [`memory::MemoryBus`] is the in-process implementation used by
//! `telepipe serve` in embedded mode; [`kafka::KafkaBus`] runs the roles apart on a broker. Consumers commit an offset only when every record before it is finished
//! ([`offsets::OffsetTracker`]), so a crash re-delivers, never skips.
//!
//! # Layout
//! - [`memory`]: the in-process bus.
//! - [`kafka`]: the Kafka bus (rdkafka).
//! - [`testsuite`]: the contract every implementation passes.
//! - [`offsets`]: acknowledgement tracking for concurrent processing.
//! - [`reply`]: request–reply correlation by call id.
//! - [`topics`]: topic names.
//! - [`metrics`]: the bus's Prometheus metrics.

pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod offsets;
pub mod reply;
pub mod testsuite;
pub mod topics;

use async_trait::async_trait;
use bytes::Bytes;
use schemas::{Envelope, Payload};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("bus backend error: {0}")]
    Backend(String),
}

impl BusError {
    /// Whether trying again can help (a broker hiccup) or not (a closed bus, a bad topic).
    pub fn is_retriable(&self) -> bool {
        matches!(self, BusError::Backend(_))
    }
}

/// One record as a consumer sees it.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub payload: Bytes,
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

    /// Records not yet committed, per topic and group (for the bus depth gauge).
    fn depth(&self) -> Vec<Depth> {
        Vec::new()
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

/// Publishes an envelope keyed by its bot id.
pub async fn publish_envelope<P: Payload>(
    bus: &dyn Bus,
    topic: &str,
    env: &Envelope<P>,
) -> Result<(), BusError> {
    let key = env.header.bot_id.key();
    let bytes = env.encode();
    metrics::PUBLISHED
        .with_label_values(&[topics::label(topic)])
        .inc();
    bus.publish(topic, &key, bytes).await
}

/// Decodes a record, or counts and logs why it is skipped (unknown version, wrong kind,
/// garbage). Never guesses.
pub fn decode_or_skip<P: Payload>(record: &Record) -> Option<Envelope<P>> {
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
