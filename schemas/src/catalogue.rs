//! The official Bot API methods (Bot API 10.1, 180 methods), taken from `api.json`.
//!
//! Used to give metrics a bounded label set (a method name comes from the client and could be
//! anything) and to answer for unknown methods the way Telegram does.

use std::collections::HashMap;
use std::sync::LazyLock;

const METHODS_TXT: &str = include_str!("methods.txt");

/// Every official method, in the catalogue's order.
pub fn methods() -> impl Iterator<Item = &'static str> {
    METHODS_TXT.lines().filter(|l| !l.is_empty())
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
    }
}
