//! sendMediaGroup with a URL, an uploaded part, a re-typed or renamed file_id
//! ([`crate::groups`]).

use super::Command;
use crate::groups;
use schemas::{ApiError, Call};
use serde_json::Value;

/// The group's items, read once.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaGroup {
    pub items: Vec<Value>,
}

/// A group the gateway has nothing to add to (or whose `media` is not a JSON array, for
/// upstream to refuse) passes through.
pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    Ok(match groups::items(call) {
        Some(items) if groups::takes_over(&items) => Command::MediaGroup(MediaGroup { items }),
        _ => Command::Passthrough,
    })
}
