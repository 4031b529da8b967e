//! What the processors may do with a call whose first run has no known outcome (which
//! handler takes a call is [`crate::cmd`]'s).

/// Methods that only read: a call whose first run has no known outcome may simply run again
/// ([`schemas::catalogue::only_reads`]).
pub fn safe_to_repeat(method: &str) -> bool {
    schemas::catalogue::only_reads(method)
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
