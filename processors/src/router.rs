//! Which handler takes a call, and in which stage: the enhanced methods get their own route,
//! every other method goes through unchanged; routes that work with files run in the files
//! stage.

use schemas::Call;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Forward to the Bot API upstream as the bot sent it.
    Passthrough,
    /// getFile of any size, stored and served token-free ([`crate::files`]).
    GetFile,
    /// A send method whose file the gateway handles (a URL, an upload, a re-typed or renamed
    /// file_id), and the gateway's `sendFile` ([`crate::uploads`]).
    Upload,
    /// sendMediaGroup with a URL, an uploaded part, a re-typed or renamed file_id
    /// ([`crate::groups`]).
    MediaGroup,
    /// answerInlineQuery with file results to look at ([`crate::inline`]).
    InlineAnswer,
    /// setWebhook, deleteWebhook, getWebhookInfo, getUpdates: the gateway keeps webhooks
    /// ([`crate::webhooks`]).
    SetWebhook,
    DeleteWebhook,
    WebhookInfo,
    GetUpdates,
    /// The gateway's `upload<Type>` and `uploadFile`: kept, sent to nobody ([`crate::uploads`]).
    UploadOnly,
}

impl Route {
    /// The stage that executes this route: file work leaves the router, so a long upload
    /// never holds one of the slots plain calls run in.
    pub fn stage(&self) -> crate::Stage {
        match self {
            Route::GetFile
            | Route::Upload
            | Route::UploadOnly
            | Route::MediaGroup
            | Route::InlineAnswer => crate::Stage::Files,
            Route::Passthrough
            | Route::SetWebhook
            | Route::DeleteWebhook
            | Route::WebhookInfo
            | Route::GetUpdates => crate::Stage::Router,
        }
    }
}

pub fn route(call: &Call) -> Route {
    if crate::uploads::upload_param(&call.method).is_some() {
        return Route::UploadOnly;
    }
    if crate::uploads::is_send_file(&call.method) {
        return Route::Upload;
    }
    match schemas::catalogue::canonical(&call.method) {
        Some("getFile") => Route::GetFile,
        Some("setWebhook") => Route::SetWebhook,
        Some("deleteWebhook") => Route::DeleteWebhook,
        Some("getWebhookInfo") => Route::WebhookInfo,
        Some("getUpdates") => Route::GetUpdates,
        Some("sendMediaGroup") if crate::groups::takes_over(call) => Route::MediaGroup,
        Some("answerInlineQuery") if crate::inline::takes_over(call) => Route::InlineAnswer,
        Some(_) if crate::uploads::takes_over(call) => Route::Upload,
        _ => Route::Passthrough,
    }
}

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
