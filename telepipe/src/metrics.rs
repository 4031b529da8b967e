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

pub static LANE_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "telepipe_lane_connections",
        "Bots' connections open on each lane (`--lanes`), this scrape's among them.",
        &["lane"]
    )
    .expect("metric registers once")
});

/// Prometheus text of every registered metric, the bus depth and the lanes' connections
/// refreshed first.
pub fn render(bus: &dyn bus::Bus, lanes: Option<&lifecycle::lanes::Lanes>) -> String {
    for (i, open) in lanes
        .map(|l| l.open())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        LANE_CONNECTIONS
            .with_label_values(&[&(i + 1).to_string()])
            .set(*open as i64);
    }
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
