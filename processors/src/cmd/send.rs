//! The sends whose file the gateway handles, the gateway's `sendFile`, and its `upload<Type>`
//! methods ([`crate::uploads`]).

use super::Command;
use crate::uploads;
use schemas::{ApiError, Call, MediaKind};

/// The send method a [`Command::Send`] makes, and the kind it sends as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendTarget {
    /// The canonical method name (`sendVideo`), or `sendFile`.
    pub method: &'static str,
    /// The kind the method sends; `None` for `sendFile`, whose kind is detected.
    pub kind: Option<MediaKind>,
}

impl SendTarget {
    /// The parameter that holds the file (`video`; `file` for `sendFile`).
    pub fn param(self) -> &'static str {
        self.kind.map_or("file", MediaKind::param)
    }
}

/// `upload<Type>` and `uploadFile`: a file kept, sent to nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadOnly {
    /// The parameter that holds the file.
    pub param: &'static str,
    /// `None` for `uploadFile`: the kind is detected.
    pub kind: Option<MediaKind>,
}

/// The gateway's own methods (`upload*`, `sendFile`): `None` for every other method.
pub(super) fn parse_gateway_method(call: &Call) -> Option<Command> {
    if let Some(param) = uploads::upload_param(&call.method) {
        return Some(Command::UploadOnly(UploadOnly {
            param,
            kind: MediaKind::from_param(param),
        }));
    }
    uploads::is_send_file(&call.method).then_some(Command::Send(SendTarget {
        method: "sendFile",
        kind: None,
    }))
}

/// A Bot API send (`method`, canonical) is the gateway's when its file is a URL, an uploaded
/// part, a re-typed or renamed file_id; any other passes through.
pub(super) fn parse(call: &Call, method: &'static str) -> Result<Command, ApiError> {
    Ok(match MediaKind::of_send_method(method) {
        Some(kind) if uploads::takes_over(call) => Command::Send(SendTarget {
            method,
            kind: Some(kind),
        }),
        _ => Command::Passthrough,
    })
}
