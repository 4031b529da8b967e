//! Ingest metrics: calls by method and outcome, end-to-end latency, in-flight calls.
//! Labels are bounded: methods outside the catalogue count as `other`.

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};
use std::sync::LazyLock;
use std::time::Instant;

pub static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_calls_total",
        "Bot API calls answered, by method and outcome (ok, error, rejected, timeout, unavailable).",
        &["method", "outcome"]
    )
    .expect("metric registers once")
});

pub static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "telepipe_calls_in_flight",
        "Calls accepted and not yet answered."
    )
    .expect("metric registers once")
});

pub static CLIENTS_GONE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_clients_gone_total",
        "Sends and edits whose client went away before their answer (each announced on calls.cancel)."
    )
    .expect("metric registers once")
});

pub fn observe(method: &'static str, outcome: &'static str, started: Instant) {
    CALLS.with_label_values(&[method, outcome]).inc();
    bus::metrics::INGEST_SECONDS.observe(started.elapsed().as_secs_f64());
}

/// Counts a call in flight for as long as it lives (the client may leave at any await).
pub struct InFlight;

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.dec();
    }
}
