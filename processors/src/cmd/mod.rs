//! The command layer: a call parsed once into what it asks the gateway to do.
//!
//! [`Command::parse`] reads the method (any spelling) and, where the gateway may take over, the
//! parameters that decide it, each command in a module of its own (as mini-redis's `cmd/`).
//! The result says which stage runs the call ([`Command::stage`]) and carries what the handler
//! needs, read and checked once: a parameter the gateway refuses is a Bot API error here, before
//! anything is asked of upstream or the store, and a handler never parses the method again nor
//! trusts an earlier look with `expect`. [`Command::apply`] runs it, with the token opened once
//! for every command that acts as the bot. Methods the gateway does not know (a newer Bot API's
//! included) are [`Command::Passthrough`]: they go upstream as the bot sent them.

mod chat_action;
mod flood_control;
mod get_file;
mod get_message;
mod inline_answer;
mod media_group;
mod profile_photos;
mod send;
mod webhook;

pub use chat_action::ChatAction;
pub use flood_control::SetFloodControl;
pub use get_file::GetFile;
pub use get_message::GetMessage;
pub use inline_answer::InlineAnswer;
pub use media_group::MediaGroup;
pub use profile_photos::GetProfilePhotos;
pub use send::{SendTarget, UploadOnly};
pub use webhook::{DeleteWebhook, GetUpdates, SetWebhook};

use crate::{
    actions, chats, files, flood, groups, inline, passthrough, polls, uploads, webhooks, Deps,
    Stage,
};
use futures_util::future::BoxFuture;
use schemas::{ApiError, BotToken, Call, Envelope, Response};

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Forward to the Bot API upstream as the bot sent it.
    Passthrough,
    /// getFile of any size, stored and served token-free ([`crate::files`]).
    GetFile(GetFile),
    /// A send method whose file the gateway handles (a URL, an upload, a re-typed or renamed
    /// file_id), or the gateway's `sendFile` ([`crate::uploads`]).
    Send(SendTarget),
    /// The gateway's `upload<Type>` and `uploadFile`: kept, sent to nobody
    /// ([`crate::uploads`]).
    UploadOnly(UploadOnly),
    /// sendMediaGroup with a URL, an uploaded part, a re-typed or renamed file_id
    /// ([`crate::groups`]).
    MediaGroup(MediaGroup),
    /// answerInlineQuery with file results to look at ([`crate::inline`]).
    InlineAnswer(InlineAnswer),
    /// setWebhook, deleteWebhook, getWebhookInfo, getUpdates: the gateway keeps webhooks
    /// ([`crate::webhooks`]).
    SetWebhook(SetWebhook),
    DeleteWebhook(DeleteWebhook),
    WebhookInfo,
    GetUpdates(GetUpdates),
    /// The gateway's setFloodControl and getFloodControl ([`crate::flood`]).
    SetFloodControl(SetFloodControl),
    GetFloodControl,
    /// The gateway's getUpdatesInfo: a polling bot's readers and what each has pending
    /// ([`crate::polls`]).
    UpdatesInfo,
    /// sendChatAction with `duration`: kept showing ([`crate::actions`]).
    ChatAction(ChatAction),
    /// The gateway's getBackend ([`crate::chats`]).
    GetBackend,
    /// The gateway's getProfilePhotos ([`crate::chats`]).
    GetProfilePhotos(GetProfilePhotos),
    /// The gateway's getChatByFile ([`crate::chats`]).
    GetChatByFile,
    /// The gateway's getMessage ([`crate::chats`]).
    GetMessage(GetMessage),
}

impl Command {
    /// What the call asks; the Bot API error to answer when a parameter the gateway handles is
    /// wrong.
    pub fn parse(call: &Call) -> Result<Command, ApiError> {
        if let Some(command) = send::parse_gateway_method(call) {
            return Ok(command);
        }
        if call.method.eq_ignore_ascii_case("getBackend") {
            return Ok(Command::GetBackend);
        }
        if call.method.eq_ignore_ascii_case("getProfilePhotos") {
            return profile_photos::parse(call);
        }
        if call.method.eq_ignore_ascii_case("getChatByFile") {
            return Ok(Command::GetChatByFile);
        }
        if call.method.eq_ignore_ascii_case("getMessage") {
            return get_message::parse(call);
        }
        if call.method.eq_ignore_ascii_case("getUpdatesInfo") {
            return Ok(Command::UpdatesInfo);
        }
        if call.method.eq_ignore_ascii_case("setFloodControl") {
            return flood_control::parse_set(call);
        }
        if call.method.eq_ignore_ascii_case("getFloodControl") {
            return Ok(Command::GetFloodControl);
        }
        let Some(method) = schemas::catalogue::canonical(&call.method) else {
            return Ok(Command::Passthrough);
        };
        match method {
            "getFile" => get_file::parse(call),
            "setWebhook" => webhook::parse_set(call),
            "deleteWebhook" => webhook::parse_delete(call),
            "getWebhookInfo" => Ok(Command::WebhookInfo),
            "getUpdates" => webhook::parse_get_updates(call),
            "sendMediaGroup" => media_group::parse(call),
            "answerInlineQuery" => inline_answer::parse(call),
            "sendChatAction" => chat_action::parse(call),
            _ => send::parse(call, method),
        }
    }

    /// The stage that executes this command: file work leaves the router, so a long upload
    /// never holds one of the slots plain calls run in.
    pub fn stage(&self) -> Stage {
        match self {
            Command::GetFile(_)
            | Command::Send(_)
            | Command::UploadOnly(_)
            | Command::MediaGroup(_)
            | Command::InlineAnswer(_) => Stage::Files,
            Command::Passthrough
            | Command::SetWebhook(_)
            | Command::DeleteWebhook(_)
            | Command::WebhookInfo
            | Command::GetUpdates(_)
            | Command::UpdatesInfo
            | Command::SetFloodControl(_)
            | Command::GetFloodControl
            | Command::ChatAction(_)
            | Command::GetBackend
            | Command::GetProfilePhotos(_)
            | Command::GetChatByFile
            | Command::GetMessage(_) => Stage::Router,
        }
    }

    /// The stage that sends the command upstream, where it takes its chat's turn: a send or
    /// an upload crosses the files and media stages first ([`Command::after`]).
    pub fn sends_in(&self) -> Stage {
        match self {
            Command::Send(_)
            | Command::UploadOnly(_)
            | Command::MediaGroup(_)
            | Command::InlineAnswer(_) => Stage::Send,
            other => other.stage(),
        }
    }

    /// The stage a command goes on to after its part in `stage`, when it does not end there:
    /// files (find and keep the file), media (read it), send.
    pub fn after(&self, stage: Stage) -> Option<Stage> {
        let staged = matches!(
            self,
            Command::Send(_)
                | Command::UploadOnly(_)
                | Command::MediaGroup(_)
                | Command::InlineAnswer(_)
        );
        match stage {
            Stage::Files if staged => Some(Stage::Media),
            Stage::Media if staged => Some(Stage::Send),
            _ => None,
        }
    }

    /// A staged command's part in `stage` ([`Command::after`]): what it found, to go on with,
    /// or the answer when the call ends here (a URL refused, nothing to upload). Boxed, as
    /// [`Command::apply`] boxes every command but the passthrough: inline, the finding and
    /// reading of files made every call's future 67 KB, copied whole into its task.
    pub fn step<'a>(
        &'a self,
        deps: &'a Deps,
        env: &'a Envelope<Call>,
        stage: Stage,
    ) -> BoxFuture<'a, Result<schemas::Staged, Response>> {
        Box::pin(self.step_inline(deps, env, stage))
    }

    async fn step_inline(
        &self,
        deps: &Deps,
        env: &Envelope<Call>,
        stage: Stage,
    ) -> Result<schemas::Staged, Response> {
        match (stage, self) {
            (Stage::Files, Command::MediaGroup(group)) => {
                let token = passthrough::open_token(deps, env)?;
                groups::find(deps, env, &token, &group.items).await
            }
            (Stage::Files, Command::InlineAnswer(answer)) => {
                // A token that does not open is answered before any URL is fetched.
                passthrough::open_token(deps, env)?;
                inline::find(deps, env, &answer.results).await
            }
            (Stage::Files, _) => {
                let token = passthrough::open_token(deps, env)?;
                uploads::find(deps, env, &token, self).await
            }
            (Stage::Media, Command::MediaGroup(group)) => {
                Ok(groups::read(deps, env, &group.items).await)
            }
            (Stage::Media, Command::InlineAnswer(_)) => Ok(inline::read(deps, env).await),
            (Stage::Media, _) => Ok(uploads::read(deps, env, self).await),
            // Nothing else stops on the way.
            (Stage::Router | Stage::Send, _) => {
                Ok(env.payload.staged.as_deref().cloned().unwrap_or_default())
            }
        }
    }

    /// Whether what the file stages found is this command's: one item per item of a group or
    /// per result of an inline answer (a record shaped otherwise is worked on again).
    fn fits(&self, staged: &schemas::Staged) -> bool {
        match self {
            Command::MediaGroup(group) => staged.items.len() == group.items.len(),
            Command::InlineAnswer(answer) => staged.items.len() == answer.results.len(),
            _ => true,
        }
    }

    /// A getUpdates with a timeout: a call that mostly waits.
    pub fn is_long_poll(&self) -> bool {
        matches!(
            self,
            Command::GetUpdates(GetUpdates {
                long_poll: true,
                ..
            })
        )
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
            Command::GetFile(get) => Box::pin(as_bot(deps, env, move |token| {
                files::get_file(deps, env, token, get)
            })),
            Command::Send(target) => Box::pin(staged_as_bot(self, deps, env, move |token, s| {
                uploads::send_file(deps, env, token, target, s)
            })),
            Command::UploadOnly(upload) => Box::pin(staged_as_bot(self, deps, env, move |t, s| {
                uploads::upload_only(deps, env, t, upload, s)
            })),
            Command::MediaGroup(ref group) => {
                let items = group.items.clone();
                Box::pin(staged_as_bot(self, deps, env, move |token, s| {
                    groups::send_media_group(deps, env, token, items, s)
                }))
            }
            Command::InlineAnswer(ref answer) => {
                let results = answer.results.clone();
                Box::pin(staged_as_bot(self, deps, env, move |token, s| {
                    inline::answer_inline_query(deps, env, token, results, s)
                }))
            }
            Command::SetWebhook(set) => Box::pin(webhooks::set_webhook(deps, env, set)),
            Command::DeleteWebhook(delete) => Box::pin(webhooks::delete_webhook(deps, env, delete)),
            Command::WebhookInfo => Box::pin(webhooks::webhook_info(deps, env)),
            Command::GetUpdates(get) => Box::pin(polls::get_updates(deps, env, get)),
            Command::UpdatesInfo => Box::pin(polls::updates_info(deps, env)),
            Command::SetFloodControl(set) => Box::pin(flood::set_flood_control(deps, env, set)),
            Command::GetFloodControl => Box::pin(flood::get_flood_control(deps, env)),
            Command::ChatAction(action) => Box::pin(actions::send_chat_action(deps, env, action)),
            Command::GetBackend => Box::pin(chats::get_backend(deps, env)),
            Command::GetProfilePhotos(which) => Box::pin(as_bot(deps, env, move |token| {
                chats::get_profile_photos(deps, env, token, which)
            })),
            Command::GetChatByFile => Box::pin(chats::get_chat_by_file(deps, env)),
            Command::GetMessage(which) => Box::pin(as_bot(deps, env, move |token| {
                chats::get_message(deps, env, token, which)
            })),
        }
    }
}

/// Runs a staged command in its sending stage ([`Command::sends_in`]) as the bot, with what
/// the files and media stages found: carried with the call, or, for a call that reached the
/// stage some other way (or whose record does not fit it), found and read here as those
/// stages would.
async fn staged_as_bot<F, Fut>(
    command: Command,
    deps: &Deps,
    env: &Envelope<Call>,
    run: F,
) -> Response
where
    F: FnOnce(BotToken, schemas::Staged) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let token = match passthrough::open_token(deps, env) {
        Ok(token) => token,
        Err(answer) => return answer,
    };
    let staged = match &env.payload.staged {
        Some(staged) if command.fits(staged) => staged.as_ref().clone(),
        _ => {
            let mut env = env.clone();
            let found = match command.step(deps, &env, Stage::Files).await {
                Ok(found) => found,
                Err(answer) => return answer,
            };
            env.payload.staged = Some(Box::new(found));
            match command.step(deps, &env, Stage::Media).await {
                Ok(read) => read,
                Err(answer) => return answer,
            }
        }
    };
    run(token, staged).await
}

/// Runs a command that acts as the bot itself (file downloads, MTProto uploads) with its token
/// opened, once; a token that does not open is answered here.
async fn as_bot<F, Fut>(deps: &Deps, env: &Envelope<Call>, run: F) -> Response
where
    F: FnOnce(BotToken) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    match passthrough::open_token(deps, env) {
        Ok(token) => run(token).await,
        Err(answer) => answer,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use schemas::{CallBody, MediaKind, TokenFingerprint};

    pub(crate) fn call(method: &str, query: &str) -> Call {
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
            staged: None,
        }
    }

    fn parse(method: &str, query: &str) -> Command {
        Command::parse(&call(method, query)).expect("parses")
    }

    #[test]
    fn staged_commands_cross_files_media_and_send_and_a_record_must_fit() {
        let group = Command::MediaGroup(MediaGroup {
            items: vec![serde_json::json!({"type": "photo", "media": "http://x/1"}); 2],
        });
        assert_eq!(group.after(Stage::Router), None);
        assert_eq!(group.after(Stage::Files), Some(Stage::Media));
        assert_eq!(group.after(Stage::Media), Some(Stage::Send));
        assert_eq!(group.after(Stage::Send), None);
        assert_eq!(
            (group.stage(), group.sends_in()),
            (Stage::Files, Stage::Send)
        );
        assert_eq!(Command::Passthrough.sends_in(), Stage::Router);
        let mut staged = schemas::Staged::default();
        assert!(!group.fits(&staged), "no item for the group's two");
        staged.items = vec![Default::default(); 2];
        assert!(group.fits(&staged));
    }

    #[test]
    fn methods_parse_in_any_spelling_and_unknown_ones_pass_through() {
        assert_eq!(parse("getwebhookinfo", ""), Command::WebhookInfo);
        assert!(matches!(
            parse("SETWEBHOOK", "url=https://example.com/hook"),
            Command::SetWebhook(_)
        ));
        assert_eq!(parse("sendMessage", ""), Command::Passthrough);
        // A method of a newer Bot API than the catalogue: forwarded untouched.
        assert_eq!(
            parse("sendSomethingNew", "file=http://x/y"),
            Command::Passthrough
        );
    }

    #[test]
    fn a_parameter_the_gateway_refuses_is_a_bot_api_error() {
        let err = Command::parse(&call("setWebhook", "url=not-a-url")).unwrap_err();
        assert_eq!(err.error_code, 400);
        assert!(err.description.starts_with("Bad Request: bad webhook"));
    }

    #[test]
    fn get_file_takes_ids_the_codec_reads_and_leaves_the_rest_upstream() {
        use telegram::file_id::{FileId, FileType};
        let fid = FileId::common(FileType::Document, 2, vec![1], 42, 7);
        let id = fid.encode();
        assert_eq!(
            parse("getfile", &format!("file_id={id}")),
            Command::GetFile(GetFile { file_id: id, fid })
        );
        assert_eq!(parse("getFile", "file_id=nonsense"), Command::Passthrough);
        assert_eq!(parse("getFile", ""), Command::Passthrough);
    }

    #[test]
    fn sends_carry_their_method_and_kind() {
        let c = parse("sendvideo", "chat_id=1&video=https://example.com/v.mp4");
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
            parse("sendVideo", "chat_id=1&video=BAACAgIAAxkBAAI"),
            Command::Passthrough
        );
        assert_eq!(
            parse("sendFile", "file=https://example.com/a"),
            Command::Send(SendTarget {
                method: "sendFile",
                kind: None
            })
        );
        assert_eq!(
            parse("uploadAudio", ""),
            Command::UploadOnly(UploadOnly {
                param: "audio",
                kind: Some(MediaKind::Audio)
            })
        );
        assert_eq!(
            parse("uploadFile", ""),
            Command::UploadOnly(UploadOnly {
                param: "file",
                kind: None
            })
        );
    }

    #[test]
    fn groups_and_inline_answers_carry_what_was_read() {
        let media = r#"[{"type":"photo","media":"https://example.com/a.jpg"},{"type":"photo","media":"AgACAgI"}]"#;
        let Command::MediaGroup(g) = parse(
            "sendMediaGroup",
            &format!("chat_id=1&media={}", urlencode(media)),
        ) else {
            panic!("a group with a URL is the gateway's")
        };
        assert_eq!(g.items.len(), 2);
        let plain = r#"[{"type":"photo","media":"AgACAgI"}]"#;
        assert_eq!(
            parse("sendMediaGroup", &format!("media={}", urlencode(plain))),
            Command::Passthrough
        );
        assert_eq!(
            parse("sendMediaGroup", "media=notjson"),
            Command::Passthrough
        );
        let results = r#"[{"type":"file","id":"1","file_url":"https://example.com/f"}]"#;
        let Command::InlineAnswer(a) = parse(
            "answerInlineQuery",
            &format!("inline_query_id=1&results={}", urlencode(results)),
        ) else {
            panic!("a file result is the gateway's")
        };
        assert_eq!(a.results.len(), 1);
    }

    fn urlencode(s: &str) -> String {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn file_work_runs_in_the_files_stage() {
        assert_eq!(
            parse("getFile", "file_id=nonsense").stage(),
            Stage::Router,
            "an id upstream refuses is a plain call"
        );
        assert_eq!(parse("uploadFile", "").stage(), Stage::Files);
        assert_eq!(parse("sendMessage", "").stage(), Stage::Router);
        assert_eq!(parse("getUpdates", "").stage(), Stage::Router);
        assert!(parse("getUpdates", "timeout=5").is_long_poll());
        assert!(!parse("sendMessage", "timeout=5").is_long_poll());
    }
}
