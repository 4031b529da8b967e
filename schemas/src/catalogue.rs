//! The official Bot API methods (Bot API 10.1, 180 methods), taken from `api.json`.
//!
//! Used to give metrics a bounded label set (a method name comes from the client and could be
//! anything) and to answer for unknown methods the way Telegram does.

use std::collections::HashMap;
use std::sync::LazyLock;

const METHODS_TXT: &str = include_str!("methods.txt");

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
        assert_eq!(returns("getupdates"), Some("Array of Update"));
        assert_eq!(returns("editMessageText"), Some("Message | Boolean"));
    }
}
