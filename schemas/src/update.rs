//! An update from Telegram for a bot, on its way to the bot's webhook: `updates.raw` (as
//! received) and `updates` (past the updates filter) carry `Envelope<Update>`, keyed by bot.
//! The header's `call_id` is the record's own id (an update answers no call).

use crate::envelope::{Payload, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub update_id: i64,
    /// The update object exactly as Telegram sent it (kinds this build does not know included).
    pub update: Value,
    /// How it reached the gateway.
    pub source: UpdateSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateSource {
    /// The gateway's own getUpdates for a bot whose webhook it keeps.
    Poll,
    /// Telegram's POST to the gateway's `/hook/` endpoint.
    Hook,
    /// A bot's own getUpdates answer, recorded for audit and replay (not delivered again).
    GetUpdates,
}

impl Payload for Update {
    const KIND: RecordKind = RecordKind::Update;
}

/// On `updates.kept`: a bot's updates up to `last_update_id` are now in the store, where its
/// getUpdates reads them (the waiting polls of every processor wake on it). Keyed by bot; the
/// header's `call_id` is the record's own id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesKept {
    pub last_update_id: i64,
}

impl Payload for UpdatesKept {
    const KIND: RecordKind = RecordKind::UpdatesKept;
}

/// Whether an update is about `chat`: any of its parts (message, channel post, chat member,
/// join request, ...) in that chat, or a callback query on a message there.
pub fn about_chat(update: &Value, chat: i64) -> bool {
    update
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .any(|part| {
            part["chat"]["id"].as_i64() == Some(chat)
                || part["message"]["chat"]["id"].as_i64() == Some(chat)
        })
}

impl Update {
    /// An update object as received, when it has an update_id.
    pub fn from_value(update: Value, source: UpdateSource) -> Option<Self> {
        let update_id = update.get("update_id")?.as_i64()?;
        Some(Self {
            update_id,
            update,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BotId, CallId, Envelope};
    use serde_json::json;

    #[test]
    fn roundtrips_and_keeps_unknown_kinds() {
        let u = Update::from_value(
            json!({"update_id": 7, "brand_new_kind": {"x": 1}}),
            UpdateSource::Poll,
        )
        .unwrap();
        let env = Envelope::new(CallId::new(), BotId(5), "ingest/x", None, u.clone());
        let back = Envelope::<Update>::decode(&env.encode()).unwrap();
        assert_eq!(back.payload, u);
        assert_eq!(back.header.kind, RecordKind::Update);
        assert!(Envelope::<crate::Call>::decode(&env.encode()).is_err());
        assert!(Update::from_value(json!({"message": {}}), UpdateSource::Hook).is_none());
    }
}
