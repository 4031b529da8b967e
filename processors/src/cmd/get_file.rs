//! getFile of any size ([`crate::files`]): the file kept in the blob store and served
//! token-free.

use super::Command;
use schemas::{ApiError, Call};
use serde_json::Value;
use telegram::file_id::FileId;

/// A getFile the gateway answers: its id, as sent and decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct GetFile {
    pub file_id: String,
    pub fid: FileId,
}

/// An id that is missing, or one the codec cannot read, is upstream's to refuse in its own
/// words: the call passes through.
pub(super) fn parse(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    let Some(file_id) = params.get("file_id").and_then(Value::as_str) else {
        return Ok(Command::Passthrough);
    };
    Ok(match FileId::decode(file_id) {
        Ok(fid) => Command::GetFile(GetFile {
            file_id: file_id.to_owned(),
            fid,
        }),
        Err(_) => Command::Passthrough,
    })
}
