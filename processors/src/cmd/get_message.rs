//! The gateway's getMessage ([`crate::chats`]): a message read back over MTProto.

use super::Command;
use schemas::{ApiError, Call};
use serde_json::Value;

/// Which message; the chat is read from the call when it runs, after `@username`s are
/// resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetMessage {
    pub message_id: i32,
}

pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    if !params
        .get("chat_id")
        .is_some_and(|v| !v.is_null() && v != "")
    {
        return Err(ApiError::bad_request("chat_id is empty"));
    }
    let id = match params.get("message_id") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match id {
        Some(id) if (1..=i32::MAX as i64).contains(&id) => Ok(Command::GetMessage(GetMessage {
            message_id: id as i32,
        })),
        _ => Err(ApiError::bad_request(
            "message_id must be a positive number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_and_a_message_id_are_needed() {
        let parsed = |q: &str| parse(&super::super::tests::call("getMessage", q));
        assert_eq!(
            parsed("chat_id=5&message_id=7"),
            Ok(Command::GetMessage(GetMessage { message_id: 7 }))
        );
        for bad in [
            "message_id=7",
            "chat_id=5",
            "chat_id=5&message_id=0",
            "chat_id=5&message_id=x",
        ] {
            assert_eq!(parsed(bad).unwrap_err().error_code, 400, "{bad}");
        }
    }
}
