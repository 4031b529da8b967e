//! sendChatAction with `duration` ([`crate::actions`]): the action shown for the whole
//! duration. Without `duration` it is the official method, passed through.

use super::Command;
use schemas::{ApiError, Call};
use serde_json::Value;
use std::time::Duration;

/// The longest action the gateway keeps up: an hour.
const MAX: u64 = 3600;

/// A chat action to keep showing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatAction {
    pub duration: Duration,
}

pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    let seconds = match call.params().get("duration") {
        None | Some(Value::Null) => return Ok(Command::Passthrough),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Command::Passthrough),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match seconds {
        Some(s) if (1..=MAX).contains(&s) => Ok(Command::ChatAction(ChatAction {
            duration: Duration::from_secs(s),
        })),
        _ => Err(ApiError::bad_request(format!(
            "duration must be a whole number of seconds from 1 to {MAX}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(query: &str) -> Result<Command, ApiError> {
        parse(&super::super::tests::call("sendChatAction", query))
    }

    #[test]
    fn a_duration_makes_it_the_gateways() {
        assert_eq!(parsed("chat_id=1&action=typing"), Ok(Command::Passthrough));
        assert_eq!(
            parsed("chat_id=1&action=typing&duration="),
            Ok(Command::Passthrough)
        );
        assert_eq!(
            parsed("chat_id=1&action=typing&duration=30"),
            Ok(Command::ChatAction(ChatAction {
                duration: Duration::from_secs(30)
            }))
        );
        for bad in ["0", "-1", "3601", "soon", "1.5"] {
            let e = parsed(&format!("chat_id=1&action=typing&duration={bad}")).unwrap_err();
            assert_eq!(e.error_code, 400, "{bad}");
        }
    }
}
