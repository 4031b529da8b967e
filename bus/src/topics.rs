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

/// Whether every reader of `topic` reads all of it, alone in a group of its own (the
/// notices each processor takes whole, an ingest's answers). Partitions only share a topic
/// among the members of a group, so such a topic gets one: more would buy its readers
/// nothing and cost the broker a read of each at every fetch.
pub fn read_whole(topic: &str) -> bool {
    matches!(topic, UPDATES_KEPT | CALLS_CANCEL | FLOOD_TURNS) || topic.starts_with("responses.")
}

/// Every topic's metric label ([`label`]).
pub const LABELS: [&str; 11] = [
    CALLS,
    CALLS_FILES,
    CALLS_MEDIA,
    CALLS_SEND,
    CALLS_CANCEL,
    FLOOD_TURNS,
    UPDATES_RAW,
    UPDATES,
    UPDATES_KEPT,
    "responses",
    "other",
];

/// A bounded metric label for a topic name (reply topics collapse into one).
pub fn label(topic: &str) -> &'static str {
    LABELS[label_index(topic)]
}

/// How many of [`LABELS`] are fixed topics' own names; then the label of every reply topic,
/// and the one of any other.
const NAMED: usize = LABELS.len() - 2;
const RESPONSES: usize = NAMED;
const OTHER: usize = NAMED + 1;

/// [`label`]'s place in [`LABELS`].
pub fn label_index(topic: &str) -> usize {
    match LABELS[..NAMED].iter().position(|l| *l == topic) {
        Some(i) => i,
        None if topic.starts_with("responses.") => RESPONSES,
        None => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_bounded_label() {
        assert_eq!((LABELS[RESPONSES], LABELS[OTHER]), ("responses", "other"));
        for topic in &LABELS[..NAMED] {
            assert_eq!(label(topic), *topic);
        }
        assert_eq!(label(&responses("local")), "responses");
        assert_eq!(label("responses"), "other");
        assert_eq!(label("calls.other"), "other");
        assert_eq!(label(""), "other");
    }

    #[test]
    fn only_the_topics_read_whole_are_read_whole() {
        for topic in [UPDATES_KEPT, CALLS_CANCEL, FLOOD_TURNS, &responses("kg")] {
            assert!(read_whole(topic), "{topic}");
        }
        for topic in [
            CALLS,
            CALLS_FILES,
            CALLS_MEDIA,
            CALLS_SEND,
            UPDATES_RAW,
            UPDATES,
        ] {
            assert!(!read_whole(topic), "{topic}");
        }
        assert!(!read_whole("responses"));
    }
}
