//! sendChatAction with `duration` (ENHANCED.md, "Chats, users, messages"). Telegram shows an
//! action for about five seconds; the gateway sends it again every [`REPEAT`] until the
//! duration is over, so it shows the whole time. The call is answered at once, with upstream's
//! answer to the first send. The repeating stops early when the bot sends something to that
//! chat (as Telegram clears the action then), when another action for that chat replaces it,
//! when a repeat is refused, and when the process shuts down: no repeater outlives it.
//!
//! Every call of a bot reaches the same router (records are keyed by bot), so the router that
//! repeats a bot's action sees that bot's sends: no shared state beyond the process.

use crate::cmd::ChatAction;
use crate::uploads::as_call;
use crate::Deps;
use schemas::{BotId, Call, CallBody, Envelope, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an action is sent again: within the five seconds Telegram shows it.
pub const REPEAT: Duration = Duration::from_secs(4);

/// The actions being repeated, by bot and chat.
#[derive(Clone, Default)]
pub struct ChatActions(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: Mutex<HashMap<(BotId, String), (u64, CancellationToken)>>,
    /// How many run: the common call checks this and nothing else.
    count: AtomicU64,
    next: AtomicU64,
}

impl ChatActions {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(BotId, String), (u64, CancellationToken)>> {
        self.0.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call of `bot` seen by the router: a send to a chat with a repeated action stops it.
    pub(crate) fn seen(&self, bot: BotId, call: &Call) {
        if self.0.count.load(Ordering::Relaxed) == 0 || !sends_to_chat(&call.method) {
            return;
        }
        let Some(chat) = call.params().get("chat_id").map(chat_key) else {
            return;
        };
        if let Some((_, stop)) = self.lock().remove(&(bot, chat)) {
            self.0.count.fetch_sub(1, Ordering::Relaxed);
            stop.cancel();
        }
    }

    /// Registers a repeater for `(bot, chat)`, stopping the one it replaces.
    fn start(&self, bot: BotId, chat: String) -> (u64, CancellationToken) {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        match self.lock().insert((bot, chat), (id, stop.clone())) {
            Some((_, replaced)) => replaced.cancel(),
            None => {
                self.0.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        (id, stop)
    }

    /// Forgets the repeater `id` when it ends, unless another replaced it.
    fn end(&self, bot: BotId, chat: String, id: u64) {
        let mut running = self.lock();
        if running
            .get(&(bot, chat.clone()))
            .is_some_and(|(i, _)| *i == id)
        {
            running.remove(&(bot, chat));
            self.0.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many actions are being repeated.
    pub fn running(&self) -> usize {
        self.0.count.load(Ordering::Relaxed) as usize
    }
}

/// The methods that put a message in a chat.
fn sends_to_chat(method: &str) -> bool {
    let m = method.to_ascii_lowercase();
    (m.starts_with("send") && m != "sendchataction")
        || matches!(
            m.as_str(),
            "copymessage" | "copymessages" | "forwardmessage" | "forwardmessages"
        )
}

/// A chat id as the key of its repeater: `123` and `"123"` are one chat.
fn chat_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => other.to_string(),
    }
}

pub(crate) async fn send_chat_action(
    deps: &Deps,
    env: &Envelope<Call>,
    action: ChatAction,
) -> Response {
    // Upstream is sent the official method: the parameters less `duration`.
    let mut params = env.payload.params();
    params.remove("duration");
    let chat = params.get("chat_id").map(chat_key).unwrap_or_default();
    let once = as_call(
        env,
        "sendChatAction",
        CallBody::Json {
            value: Value::Object(params),
        },
    );
    let answer = crate::passthrough::execute(deps, &once).await;
    if answer.status != 200 {
        return answer;
    }
    let bot = env.header.bot_id;
    let (id, stop) = deps.actions.start(bot, chat.clone());
    let shutdown = deps.polls_stop.clone().unwrap_or_default();
    let deps = deps.clone();
    let span = tracing::info_span!("chat-action", bot_id = %bot);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let until = tokio::time::Instant::now() + action.duration;
            loop {
                let next = tokio::time::Instant::now() + REPEAT;
                if next >= until {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop.cancelled() => break,
                    _ = shutdown.cancelled() => break,
                }
                let again = crate::passthrough::execute(&deps, &once).await;
                if again.status != 200 {
                    tracing::info!(
                        status = again.status,
                        "a repeated chat action was refused; stopping it"
                    );
                    break;
                }
            }
            deps.actions.end(bot, chat, id);
        },
        span,
    ));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_to_the_chat_stops_its_action() {
        let actions = ChatActions::default();
        let bot = BotId(1);
        let (id, stop) = actions.start(bot, "42".into());
        assert_eq!(actions.running(), 1);
        let call = |method: &str, query: &str| crate::cmd::tests::call(method, query);
        actions.seen(bot, &call("getChat", "chat_id=42"));
        actions.seen(bot, &call("sendChatAction", "chat_id=42"));
        actions.seen(BotId(2), &call("sendMessage", "chat_id=42"));
        actions.seen(bot, &call("sendMessage", "chat_id=43"));
        assert!(!stop.is_cancelled());
        actions.seen(bot, &call("SENDPHOTO", "chat_id=42"));
        assert!(stop.is_cancelled());
        assert_eq!(actions.running(), 0);
        // Its end, after, forgets nothing else.
        let (_, other) = actions.start(bot, "42".into());
        actions.end(bot, "42".into(), id);
        assert_eq!(actions.running(), 1);
        assert!(!other.is_cancelled());
    }

    #[test]
    fn a_new_action_replaces_the_last() {
        let actions = ChatActions::default();
        let (_, first) = actions.start(BotId(1), "7".into());
        let (second_id, second) = actions.start(BotId(1), "7".into());
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        assert_eq!(actions.running(), 1);
        actions.end(BotId(1), "7".into(), second_id);
        assert_eq!(actions.running(), 0);
    }
}
