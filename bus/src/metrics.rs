//! The bus's metrics, registered once in the process-wide registry.

use prometheus::{register_int_counter_vec, IntCounterVec};
use std::sync::LazyLock;

pub static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_bus_published_total",
        "Records published, by topic.",
        &["topic"]
    )
    .expect("metric registers once")
});

pub static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_bus_skipped_total",
        "Records skipped because this build cannot read them, by topic and reason.",
        &["topic", "reason"]
    )
    .expect("metric registers once")
});

pub static HANDED_OVER: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_bus_handed_over_total",
        "Records handed by their publisher to a consumer in the same process once the broker \
         acknowledged them, ahead of the consumer's fetch (the Kafka bus), by topic.",
        &["topic"]
    )
    .expect("metric registers once")
});

pub static CONSUMER_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_bus_consumer_errors_total",
        "Errors a Kafka consumer was told of and passed, as librdkafka recovers from them (a \
         failed fetch, a topic not on the broker yet, all brokers down), by librdkafka's code.",
        &["code"]
    )
    .expect("metric registers once")
});

pub static STAGE_PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_stage_panics_total",
        "Batches whose handler panicked (their records were released), by stage.",
        &["stage"]
    )
    .expect("metric registers once")
});

pub static LATE_REPLIES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "telepipe_replies_unclaimed_total",
        "Responses that found no waiting client (it left, or the deadline passed)."
    )
    .expect("metric registers once")
});

/// [`PUBLISHED`]'s counter of each topic label, looked up once: every call publishes.
pub(crate) fn published(label: usize) -> &'static prometheus::IntCounter {
    static BY_LABEL: [std::sync::OnceLock<prometheus::IntCounter>; crate::topics::LABELS.len()] =
        [const { std::sync::OnceLock::new() }; crate::topics::LABELS.len()];
    BY_LABEL[label].get_or_init(|| PUBLISHED.with_label_values(&[crate::topics::LABELS[label]]))
}

/// The stages of [`STAGE_SECONDS`], each looked up once (a lookup hashes its label under a
/// lock): every call observes `ingest`, `queue` and `upstream`; only a Kafka bus `publish`, and
/// only a durable bus's router `attempt`.
pub static INGEST_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(|| STAGE_SECONDS.with_label_values(&["ingest"]));
pub static QUEUE_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(|| STAGE_SECONDS.with_label_values(&["queue"]));
pub static UPSTREAM_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(|| STAGE_SECONDS.with_label_values(&["upstream"]));
pub static PUBLISH_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(|| STAGE_SECONDS.with_label_values(&["publish"]));
pub static ATTEMPT_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(|| STAGE_SECONDS.with_label_values(&["attempt"]));

pub static STAGE_SECONDS: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "telepipe_stage_seconds",
        "Latency per pipeline stage: ingest (the call in the gateway: from its handler's start, \
         the request's head parsed, to the pipeline's answer reaching it), queue \
         (published to taken by a processor), upstream (the Telegram round trip); on Kafka \
         also publish (any record, of any topic, sent until the broker acknowledged it, the \
         producer's linger included: for calls, the broker's share of queue) and attempt (the \
         router recording a call it runs as attempted, in the store, before running it: what \
         a bus that can deliver the call again needs).",
        &["stage"],
        // From 100 µs: a call through the gateway itself takes a few hundred (the ingest and
        // queue stages live there).
        vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0, 30.0, 60.0
        ]
    )
    .expect("metric registers once")
});
