//! Processor metrics.

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge_vec, IntCounter,
    IntCounterVec, IntGaugeVec,
};
use std::sync::LazyLock;

pub static UPSTREAM: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_upstream_requests_total",
        "Requests to the Bot API upstream, by outcome (answered, unreachable, timeout, failed).",
        &["outcome"]
    )
    .expect("metric registers once")
});

/// [`UPSTREAM`]'s `answered`, looked up once: every call counts in it.
pub static UPSTREAM_ANSWERED: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| UPSTREAM.with_label_values(&["answered"]));

pub static FLOOD: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_flood_total",
        "Flood control (--flood-control), by bot (its id for the first 100 bots, then \
         \"other\"): upstream 429s absorbed (the call sent again after retry_after), calls \
         whose deadline passed in the queue (answered Telegram's 429), calls whose client went \
         away while they waited (not sent).",
        &["bot", "what"]
    )
    .expect("metric registers once")
});

pub static FLOOD_QUEUED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "telepipe_flood_queued",
        "Sends and edits waiting in flood control's queues in this process, by bot (its id \
         for the first 100 bots, then \"other\").",
        &["bot"]
    )
    .expect("metric registers once")
});

pub static FLOOD_WAIT: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    prometheus::register_histogram_vec!(
        "telepipe_flood_wait_seconds",
        "How long a queued send or edit waited for its turn and its tokens (--flood-control), \
         by bot (its id for the first 100 bots, then \"other\").",
        &["bot"],
        vec![0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0]
    )
    .expect("metric registers once")
});

/// How many bots get a label of their own in the flood control metrics.
const LABELLED_BOTS: usize = 100;

/// A bot's label in the flood control metrics: its id (public: a bot's user id, not its
/// token) for the first [`LABELLED_BOTS`] bots seen, `other` for the rest, so the series stay
/// bounded however many bots a gateway hosts.
pub fn bot_label(bot: schemas::BotId) -> String {
    static SEEN: LazyLock<std::sync::Mutex<std::collections::HashSet<i64>>> =
        LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(&bot.0) || (seen.len() < LABELLED_BOTS && seen.insert(bot.0)) {
        bot.0.to_string()
    } else {
        "other".to_owned()
    }
}

pub static USERNAMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_usernames_resolved_total",
        "@usernames asked of Telegram over MTProto (kept per bot in the store), by outcome \
         (resolved, including \"no such username\"; failed).",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static REDELIVERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_calls_redelivered_total",
        "Calls seen again after a restart, by what happened: answered (from the recorded \
         outcome), repeated (a read whose first run is unknown), unknown_outcome (not sent again).",
        &["what"]
    )
    .expect("metric registers once")
});

pub static POLLS_WAITING: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    prometheus::register_int_gauge!(
        "telepipe_long_polls_waiting",
        "getUpdates long polls waiting outside the processing slots."
    )
    .expect("metric registers once")
});

pub static HANDED_OVER: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_calls_handed_over_total",
        "Hand-overs from one stage to the next (to calls.files, calls.media, calls.send): a file send counts three."
    )
    .expect("metric registers once")
});

pub static PANICS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_call_panics_total",
        "Calls whose handler panicked (each was answered with an error and recorded)."
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

pub static FILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_get_file_total",
        "Enhanced getFile calls, by what they found: cached (stored already), download (started \
         one), in_progress (answered 202).",
        &["found"]
    )
    .expect("metric registers once")
});

pub static FILE_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "telepipe_file_bytes_downloaded_total",
        "Bytes of files downloaded from Telegram into the blob store."
    )
    .expect("metric registers once")
});

pub static UPLOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_uploads_total",
        "Files the gateway sent for a send method, by how: multipart (Bot API), mtproto \
         (uploaded as the bot, sent by file_id), deduped (the same file sent before: by its \
         cached file_id, no upload).",
        &["how"]
    )
    .expect("metric registers once")
});

pub static UPLOAD_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "telepipe_upload_bytes_total",
        "Bytes of uploads moved so far, by stage: fetch (from a URL into the blob store), \
         mtproto (from the blob store up to Telegram as the bot). Rates of this show a long \
         upload's progress.",
        &["stage"]
    )
    .expect("metric registers once")
});

pub static UPLOADS_RUNNING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "telepipe_uploads_running",
        "Upload transfers under way, by stage (fetch, mtproto).",
        &["stage"]
    )
    .expect("metric registers once")
});
