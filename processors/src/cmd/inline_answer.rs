//! answerInlineQuery with file results to look at ([`crate::inline`]).

use super::Command;
use crate::inline;
use schemas::{ApiError, Call};
use serde_json::Value;

/// The answer's results, read once.
#[derive(Clone, Debug, PartialEq)]
pub struct InlineAnswer {
    pub results: Vec<Value>,
}

/// An answer with no file to look at (or whose `results` is not a JSON array, for upstream to
/// refuse) passes through.
pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    Ok(match inline::results(call) {
        Some(results) if inline::takes_over(call, &results) => {
            Command::InlineAnswer(InlineAnswer { results })
        }
        _ => Command::Passthrough,
    })
}
