//! Egress: answers leave the gateway here.
//!
//! - [`run`] consumes this instance's reply topic (`responses.<instance>`) and hands each
//!   answer to the [`bus::reply::Correlator`], which wakes the HTTP request waiting in ingest.
//!   Answers nobody waits for any more (the client left, the deadline passed) are counted and
//!   dropped; their outcome is already in the store.
//! - [`downloads`] serves `/storage/<bot_username>/<name>` (token-free) and
//!   `/file/bot<token>/<path>`: stored files from the blob store ([`storage`]: Range, HEAD,
//!   ETag), official paths streamed from upstream and stored on the way.
//!
//! # Layout
//! - [`run`] (this file), [`downloads`], [`storage`].

pub mod downloads;
pub mod storage;

use bus::reply::Correlator;
use bus::Bus;
use schemas::Response;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
}

/// Subscribes to the reply topic of `instance`. Call before ingest accepts requests, so no
/// answer can be published before anyone listens.
pub async fn subscribe(
    bus: &dyn Bus,
    instance: &str,
) -> Result<Box<dyn bus::Consumer>, EgressError> {
    let topic = bus::topics::responses(instance);
    bus.ensure_topics(std::slice::from_ref(&topic)).await?;
    Ok(bus
        .subscribe(&format!("egress.{instance}"), &[topic])
        .await?)
}

/// Resolves waiting calls until `shutdown`.
pub async fn run(
    mut consumer: Box<dyn bus::Consumer>,
    correlator: Arc<Correlator>,
    shutdown: CancellationToken,
) -> Result<(), EgressError> {
    loop {
        let record = tokio::select! {
            _ = shutdown.cancelled() => {
                consumer.flush().await?;
                return Ok(());
            }
            r = consumer.next() => r?,
        };
        if let Some(env) = bus::decode_or_skip::<Response>(&record) {
            let call_id = env.header.call_id;
            if !correlator.complete(env) {
                tracing::debug!(%call_id, "answer arrived after its client left");
            }
        }
        // Answers are transient: the outcome of record is in the store already.
        consumer
            .commit(&record.topic, record.partition, record.offset)
            .await?;
    }
}
