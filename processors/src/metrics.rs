//! Processor metrics.

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};
use std::sync::LazyLock;

pub static UPSTREAM: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_upstream_requests_total",
        "Requests to the Bot API upstream, by outcome (answered, unreachable, timeout, failed).",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static REDELIVERED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_calls_redelivered_total",
        "Calls seen again after a restart and answered from their recorded outcome."
    )
    .expect("metric registers once")
});

pub static STORE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_store_errors_total",
        "Outcomes or audit rows that could not be written."
    )
    .expect("metric registers once")
});
