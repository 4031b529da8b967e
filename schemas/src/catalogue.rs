//! The official Bot API methods (Bot API 10.1, 180 methods), taken from `api.json`.
//!
//! Used to give metrics a bounded label set (a method name comes from the client and could be
//! anything) and to answer for unknown methods the way Telegram does.

use std::collections::HashMap;
use std::sync::LazyLock;

const METHODS_TXT: &str = include_str!("methods.txt");

/// The Bot API version the catalogue pins. Telegram has moved on (10.5 by now): methods,
/// fields and update kinds it does not know pass through untouched; only metric labels and
/// the answers for unknown methods depend on it.
pub const VERSION: &str = "Bot API 10.1";

/// Every official method with what it returns (`Message`, `Array of Update`, `Message |
/// Boolean`, ...), in the catalogue's order.
fn entries() -> impl Iterator<Item = (&'static str, &'static str)> {
    METHODS_TXT
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('\t').unwrap_or((l, "")))
}

/// Every official method, in the catalogue's order.
pub fn methods() -> impl Iterator<Item = &'static str> {
    entries().map(|(m, _)| m)
}

/// What a method returns, as the catalogue writes it.
pub fn returns(method: &str) -> Option<&'static str> {
    let m = canonical(method)?;
    entries().find(|(n, _)| *n == m).map(|(_, r)| r)
}

static BY_LOWER: LazyLock<HashMap<String, &'static str>> =
    LazyLock::new(|| methods().map(|m| (m.to_ascii_lowercase(), m)).collect());

/// The catalogue spelling of a method name; method names are case-insensitive.
pub fn canonical(method: &str) -> Option<&'static str> {
    BY_LOWER.get(&method.to_ascii_lowercase()).copied()
}

/// Methods of the catalogue that only read (`getMe`, `getUpdates`, `getChat`, ...): running
/// one twice does no harm, so a call whose outcome is unknown may run again, and a 5xx for
/// it invites nothing worse than a repeat. Anything else (and any method the catalogue does
/// not know) may change something.
pub fn only_reads(method: &str) -> bool {
    canonical(method).is_some_and(|m| m.starts_with("get"))
}

/// Whether a method puts or changes a message in a chat (sends, edits, copies, forwards): what
/// Telegram's flood limits count and flood control queues. By its name, not the catalogue, so a
/// send that a later Bot API adds is one too. Reads, chat actions and the administration of
/// chats (`editForumTopic`, `editChatInviteLink`) are not.
pub fn puts_in_chat(method: &str) -> bool {
    // Asked of every call the ingest takes: compared without allocating.
    let starts = |prefix: &str| {
        method
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    let is = |name: &str| method.eq_ignore_ascii_case(name);
    (starts("send") && !is("sendChatAction"))
        || starts("editMessage")
        || [
            "copyMessage",
            "copyMessages",
            "forwardMessage",
            "forwardMessages",
        ]
        .iter()
        .any(|m| is(m))
}

/// A metric label for a method: its canonical name, or `other` (bounded cardinality).
pub fn label(method: &str) -> &'static str {
    canonical(method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_method_once() {
        assert_eq!(methods().count(), 180);
        assert_eq!(BY_LOWER.len(), 180);
        assert_eq!(canonical("SENDMESSAGE"), Some("sendMessage"));
        assert_eq!(label("sendmessage"), "sendMessage");
        assert_eq!(label("../../etc"), "other");
        assert!(puts_in_chat("sendMessage") && puts_in_chat("EDITMESSAGETEXT"));
        assert!(
            puts_in_chat("sendLivePhoto"),
            "a send the catalogue does not know yet"
        );
        assert!(!puts_in_chat("sendChatAction") && !puts_in_chat("editForumTopic"));
        assert_eq!(returns("getupdates"), Some("Array of Update"));
        assert_eq!(returns("editMessageText"), Some("Message | Boolean"));
    }
}

#[cfg(test)]
mod version_tests {
    /// The pinned version is the catalogue's, and the method list is the catalogue's.
    #[test]
    fn the_catalogue_says_which_version_it_pins() {
        let api: serde_json::Value =
            serde_json::from_str(include_str!("../api.json")).expect("api.json");
        assert_eq!(api["version"], super::VERSION);
        let names: Vec<&str> = api["methods"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(names.len(), super::methods().count());
        for n in names {
            assert!(super::canonical(n).is_some(), "{n}");
        }
    }
}
