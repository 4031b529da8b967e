//! Topic names.

/// Every call a bot makes.
pub const CALLS: &str = "calls";

/// Calls the router hands to the files stage (sends and uploads of files, getFile, media
/// groups, inline answers with files): the very records of `calls`, keyed by bot as there.
pub const CALLS_FILES: &str = "calls.files";

/// Sends, uploads, media groups and inline answers whose files the files stage found and kept
/// (`Envelope<Call>` with `Call::staged`, keyed by bot), for the media stage to read.
pub const CALLS_MEDIA: &str = "calls.media";

/// Sends, uploads, media groups and inline answers ready to go (their files found and read),
/// for the send stage.
pub const CALLS_SEND: &str = "calls.send";

/// Updates as received from Telegram (the gateway's polling, or its `/hook/` endpoint).
pub const UPDATES_RAW: &str = "updates.raw";

/// Updates past the updates filter, for delivery to webhooks.
pub const UPDATES: &str = "updates";

/// Which bots' updates were just kept in the store (`Envelope<UpdatesKept>`, keyed by bot):
/// each processor reads all of it in a group of its own, to wake the getUpdates waiting there.
pub const UPDATES_KEPT: &str = "updates.kept";

/// Calls whose client went away before their answer (`Envelope<CallCancelled>`, keyed by bot):
/// each processor reads all of it in a group of its own, to drop such a call from its flood
/// control queues before it is sent.
pub const CALLS_CANCEL: &str = "calls.cancel";

/// Turns a files stage takes from the router that keeps its call's place in flood control
/// (`Envelope<FloodTurn>`, keyed by bot): every processor reads all of it, with
/// `calls.cancel`.
pub const FLOOD_TURNS: &str = "flood.turns";

/// Answers for the ingest instance `instance`: it alone consumes this topic, so its egress
/// can resolve the HTTP requests it holds.
pub fn responses(instance: &str) -> String {
    format!("responses.{instance}")
}

/// A bounded metric label for a topic name (reply topics collapse into one).
pub fn label(topic: &str) -> &'static str {
    if topic == CALLS {
        "calls"
    } else if topic == CALLS_FILES {
        "calls.files"
    } else if topic == CALLS_MEDIA {
        "calls.media"
    } else if topic == CALLS_SEND {
        "calls.send"
    } else if topic == CALLS_CANCEL {
        "calls.cancel"
    } else if topic == FLOOD_TURNS {
        "flood.turns"
    } else if topic == UPDATES_RAW {
        "updates.raw"
    } else if topic == UPDATES {
        "updates"
    } else if topic == UPDATES_KEPT {
        "updates.kept"
    } else if topic.starts_with("responses.") {
        "responses"
    } else {
        "other"
    }
}
