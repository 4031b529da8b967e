//! The gateway's getProfilePhotos ([`crate::chats`]): a user's profile photos over MTProto.

use super::Command;
use schemas::{ApiError, Call};
use serde_json::Value;

/// Which photos: from `offset` (newest first), at most `limit` (1–100, 100 when not given).
/// The chat is read from the call when it runs, after `@username`s are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetProfilePhotos {
    pub offset: i32,
    pub limit: i32,
}

fn int(v: Option<&Value>) -> Result<Option<i64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(()),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    if !["chat_id", "user_id"]
        .iter()
        .any(|k| params.get(*k).is_some_and(|v| !v.is_null() && v != ""))
    {
        return Err(ApiError::bad_request("chat_id is empty"));
    }
    let offset = match int(params.get("offset")) {
        Ok(o) => o.unwrap_or(0),
        Err(()) => return Err(ApiError::bad_request("offset must be a number")),
    };
    let limit = match int(params.get("limit")) {
        Ok(l) => l.unwrap_or(100),
        Err(()) => return Err(ApiError::bad_request("limit must be between 1 and 100")),
    };
    if !(0..=i32::MAX as i64).contains(&offset) {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 100"));
    }
    Ok(Command::GetProfilePhotos(GetProfilePhotos {
        offset: offset as i32,
        limit: limit as i32,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(query: &str) -> Result<Command, ApiError> {
        parse(&super::super::tests::call("getProfilePhotos", query))
    }

    #[test]
    fn offset_and_limit_are_checked() {
        assert_eq!(
            parsed("chat_id=5"),
            Ok(Command::GetProfilePhotos(GetProfilePhotos {
                offset: 0,
                limit: 100
            }))
        );
        assert_eq!(
            parsed("user_id=5&offset=2&limit=3"),
            Ok(Command::GetProfilePhotos(GetProfilePhotos {
                offset: 2,
                limit: 3
            }))
        );
        for bad in [
            "",
            "chat_id=5&limit=0",
            "chat_id=5&limit=101",
            "chat_id=5&offset=-1",
            "chat_id=5&limit=x",
        ] {
            assert_eq!(parsed(bad).unwrap_err().error_code, 400, "{bad}");
        }
    }
}
