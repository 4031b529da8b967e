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
    consumer: Box<dyn bus::Consumer>,
    correlator: Arc<Correlator>,
    shutdown: CancellationToken,
) -> Result<(), EgressError> {
    // Answers are transient (the outcome of record is in the store already) and independent
    // of each other: taken in batches of what is ready, several batches at once.
    let opts = bus::stage::Options {
        name: "replies",
        concurrency: 4,
        batch: 64,
        drain: std::time::Duration::from_secs(10),
    };
    bus::stage::run(consumer, opts, shutdown, |records, _slot| {
        let correlator = correlator.clone();
        async move {
            for record in &records {
                if let Some(env) = bus::decode_or_skip::<Response>(record) {
                    let call_id = env.header.call_id;
                    if !correlator.complete(env) {
                        tracing::debug!(%call_id, "answer arrived after its client left");
                    }
                }
            }
            Ok::<(), EgressError>(())
        }
    })
    .await
}
