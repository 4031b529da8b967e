//! Process-level metrics, refreshed when `/metrics` is scraped.

use prometheus::{register_int_gauge_vec, IntGaugeVec};
use std::sync::LazyLock;

pub static BUS_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "telepipe_bus_depth",
        "Records not yet committed, by topic and consumer group.",
        &["topic", "group"]
    )
    .expect("metric registers once")
});

/// Prometheus text of every registered metric, the bus depth refreshed first.
pub fn render(bus: &dyn bus::Bus) -> String {
    for d in bus.depth() {
        BUS_DEPTH
            .with_label_values(&[bus::topics::label(&d.topic), &d.group])
            .set(d.records as i64);
    }
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(error) = encoder.encode_utf8(&prometheus::gather(), &mut out) {
        tracing::warn!(%error, "metrics could not be encoded");
    }
    out
}
