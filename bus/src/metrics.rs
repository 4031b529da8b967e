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

pub static LATE_REPLIES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "telepipe_replies_unclaimed_total",
        "Responses that found no waiting client (it left, or the deadline passed)."
    )
    .expect("metric registers once")
});
