//! The command layer: a call parsed once into what it asks the gateway to do.
//!
//! [`Command::parse`] reads the method (any spelling) and, where the gateway may take over, the
//! parameters that decide it; the result says which stage runs the call
//! ([`Command::stage`]) and carries what the handler needs, so a handler never parses the
//! method again nor trusts an earlier look with `expect`. [`Command::apply`] runs it. Methods
//! the gateway does not know (a newer Bot API's included) are [`Command::Passthrough`]: they go
//! upstream as the bot sent them.

use crate::{files, groups, inline, passthrough, uploads, webhooks, Deps, Stage};
use futures_util::future::BoxFuture;
use schemas::{Call, Envelope, MediaKind, Response};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Forward to the Bot API upstream as the bot sent it.
    Passthrough,
    /// getFile of any size, stored and served token-free ([`crate::files`]).
    GetFile,
    /// A send method whose file the gateway handles (a URL, an upload, a re-typed or renamed
    /// file_id), or the gateway's `sendFile` ([`crate::uploads`]).
    Send(SendTarget),
    /// The gateway's `upload<Type>` and `uploadFile`: kept, sent to nobody
    /// ([`crate::uploads`]); `kind` is `None` for `uploadFile` (the kind is detected).
    UploadOnly {
        param: &'static str,
        kind: Option<MediaKind>,
    },
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
}

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

impl Command {
    pub fn parse(call: &Call) -> Command {
        if let Some(param) = uploads::upload_param(&call.method) {
            return Command::UploadOnly {
                param,
                kind: MediaKind::from_param(param),
            };
        }
        if uploads::is_send_file(&call.method) {
            return Command::Send(SendTarget {
                method: "sendFile",
                kind: None,
            });
        }
        let Some(method) = schemas::catalogue::canonical(&call.method) else {
            return Command::Passthrough;
        };
        match method {
            "getFile" => Command::GetFile,
            "setWebhook" => Command::SetWebhook,
            "deleteWebhook" => Command::DeleteWebhook,
            "getWebhookInfo" => Command::WebhookInfo,
            "getUpdates" => Command::GetUpdates,
            "sendMediaGroup" if groups::takes_over(call) => Command::MediaGroup,
            "answerInlineQuery" if inline::takes_over(call) => Command::InlineAnswer,
            _ => match MediaKind::of_send_method(method) {
                Some(kind) if uploads::takes_over(call) => Command::Send(SendTarget {
                    method,
                    kind: Some(kind),
                }),
                _ => Command::Passthrough,
            },
        }
    }

    /// The stage that executes this command: file work leaves the router, so a long upload
    /// never holds one of the slots plain calls run in.
    pub fn stage(&self) -> Stage {
        match self {
            Command::GetFile
            | Command::Send(_)
            | Command::UploadOnly { .. }
            | Command::MediaGroup
            | Command::InlineAnswer => Stage::Files,
            Command::Passthrough
            | Command::SetWebhook
            | Command::DeleteWebhook
            | Command::WebhookInfo
            | Command::GetUpdates => Stage::Router,
        }
    }

    /// Runs the command. The passthrough runs in place; every other command is boxed: a
    /// call's future is as large as its largest command, and the common call should not pay
    /// for moving an upload's state.
    pub async fn apply(self, deps: &Deps, env: &Envelope<Call>) -> Response {
        match self {
            Command::Passthrough => passthrough::execute(deps, env).await,
            other => other.boxed(deps, env).await,
        }
    }

    fn boxed<'a>(self, deps: &'a Deps, env: &'a Envelope<Call>) -> BoxFuture<'a, Response> {
        match self {
            Command::Passthrough => Box::pin(passthrough::execute(deps, env)),
            Command::GetFile => Box::pin(files::get_file(deps, env)),
            Command::Send(target) => Box::pin(uploads::send_file(deps, env, target)),
            Command::UploadOnly { param, kind } => {
                Box::pin(uploads::upload_only(deps, env, param, kind))
            }
            Command::SetWebhook => Box::pin(webhooks::set_webhook(deps, env)),
            Command::DeleteWebhook => Box::pin(webhooks::delete_webhook(deps, env)),
            Command::WebhookInfo => Box::pin(webhooks::webhook_info(deps, env)),
            Command::GetUpdates => Box::pin(webhooks::get_updates(deps, env)),
            Command::MediaGroup => Box::pin(groups::send_media_group(deps, env)),
            Command::InlineAnswer => Box::pin(inline::answer_inline_query(deps, env)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{CallBody, TokenFingerprint};

    fn call(method: &str, query: &str) -> Call {
        Call {
            token: None,
            token_fingerprint: TokenFingerprint("x".into()),
            test_env: false,
            method: method.into(),
            http_method: "GET".into(),
            query: query.into(),
            body: CallBody::Empty,
            deadline_ms: 0,
            rejected: None,
        }
    }

    #[test]
    fn methods_parse_in_any_spelling_and_unknown_ones_pass_through() {
        assert_eq!(Command::parse(&call("getfile", "")), Command::GetFile);
        assert_eq!(Command::parse(&call("SETWEBHOOK", "")), Command::SetWebhook);
        assert_eq!(
            Command::parse(&call("sendMessage", "")),
            Command::Passthrough
        );
        // A method of a newer Bot API than the catalogue: forwarded untouched.
        assert_eq!(
            Command::parse(&call("sendSomethingNew", "file=http://x/y")),
            Command::Passthrough
        );
    }

    #[test]
    fn sends_carry_their_method_and_kind() {
        let c = Command::parse(&call(
            "sendvideo",
            "chat_id=1&video=https://example.com/v.mp4",
        ));
        assert_eq!(
            c,
            Command::Send(SendTarget {
                method: "sendVideo",
                kind: Some(MediaKind::Video)
            })
        );
        let Command::Send(t) = c else { unreachable!() };
        assert_eq!(t.param(), "video");
        // A plain file_id send is not the gateway's business.
        assert_eq!(
            Command::parse(&call("sendVideo", "chat_id=1&video=BAACAgIAAxkBAAI")),
            Command::Passthrough
        );
        let c = Command::parse(&call("sendFile", "file=https://example.com/a"));
        assert_eq!(
            c,
            Command::Send(SendTarget {
                method: "sendFile",
                kind: None
            })
        );
        assert_eq!(
            Command::parse(&call("uploadAudio", "")),
            Command::UploadOnly {
                param: "audio",
                kind: Some(MediaKind::Audio)
            }
        );
        assert_eq!(
            Command::parse(&call("uploadFile", "")),
            Command::UploadOnly {
                param: "file",
                kind: None
            }
        );
    }

    #[test]
    fn file_work_runs_in_the_files_stage() {
        assert_eq!(Command::parse(&call("getFile", "")).stage(), Stage::Files);
        assert_eq!(
            Command::parse(&call("uploadFile", "")).stage(),
            Stage::Files
        );
        assert_eq!(
            Command::parse(&call("sendMessage", "")).stage(),
            Stage::Router
        );
        assert_eq!(
            Command::parse(&call("getUpdates", "")).stage(),
            Stage::Router
        );
    }
}
