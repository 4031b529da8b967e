//! Which handler takes a call. Every method goes through unchanged today; the enhanced
//! methods (files, usernames, getMessage, ...) get their own routes as they arrive.

use schemas::Call;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Forward to the Bot API upstream as the bot sent it.
    Passthrough,
}

pub fn route(_call: &Call) -> Route {
    Route::Passthrough
}

/// Methods that only read (`getMe`, `getUpdates`, `getChat`, ...): running one twice does no
/// harm, so a call whose first run has no known outcome may simply run again.
pub fn safe_to_repeat(method: &str) -> bool {
    schemas::catalogue::canonical(method).is_some_and(|m| m.starts_with("get"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_safe_to_repeat() {
        assert!(safe_to_repeat("getme"));
        assert!(safe_to_repeat("getUpdates"));
        assert!(!safe_to_repeat("sendMessage"));
        assert!(!safe_to_repeat("getSomethingUnknown"));
    }
}
