//! The sandbox's world: bots, their update queues and webhooks, chats and messages, stored
//! files, the calls received and the faults waiting to be injected. One lock guards it all:
//! the sandbox is a test double, clarity beats throughput here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use telegram::file_id::FileType;
use tokio::sync::watch;

#[derive(Default)]
pub struct World {
    state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    pub bots: HashMap<i64, Bot>,
    /// Files by file_unique_id.
    pub files: HashMap<String, StoredFile>,
    /// Official file paths (`documents/file_3.pdf`) to file_unique_id.
    pub by_path: HashMap<String, String>,
    pub chats: HashMap<i64, ChatState>,
    pub calls: VecDeque<RecordedCall>,
    pub faults: Vec<Fault>,
    pub next_call: u64,
    pub next_file: u64,
    /// File bytes handed out by the MTProto face's `upload.getFile`.
    pub mtproto_bytes_served: u64,
    /// `auth.importBotAuthorization` calls accepted.
    pub mtproto_sign_ins: u64,
    /// Users other than bots, by id (registered through the control API).
    pub users: HashMap<i64, SandboxUser>,
    /// Chats registered through the control API (groups, supergroups, channels), by id, as Bot
    /// API Chat objects: the Bot API finds those with a username by `@username`.
    pub public_chats: HashMap<i64, Value>,
    /// Users' profile photos, newest first: file_unique_ids of photos in `files`.
    pub profile_photos: HashMap<i64, Vec<String>>,
    /// Registered chats' photo history, newest first, the same way.
    pub chat_photos: HashMap<i64, Vec<String>>,
    /// Messages bots sent, by (bot, chat, message id), as Bot API Message objects.
    pub messages: HashMap<(i64, i64, i64), Value>,
    /// Chat actions received on the MTProto face: (bot, chat, action).
    pub chat_actions: Vec<(i64, i64, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxUser {
    pub id: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default = "default_first_name")]
    pub first_name: String,
    /// How many profile photos the user has (made when the user is registered).
    #[serde(default)]
    pub photos: u32,
}

fn default_first_name() -> String {
    "Sandbox User".into()
}

/// Calls kept for the control API; older ones are forgotten.
const MAX_CALLS: usize = 200_000;

pub struct Bot {
    pub id: i64,
    pub username: String,
    pub updates: VecDeque<Value>,
    pub next_update_id: i64,
    pub webhook: Option<Webhook>,
    /// Bumped by every getUpdates: an older poll still waiting sees it and ends with 409.
    pub poll_generation: u64,
    /// The update kinds the bot last asked for (getUpdates' `allowed_updates`); `None`:
    /// Telegram's default, every kind but `chat_member`, `message_reaction` and
    /// `message_reaction_count`. Others are dropped, as Telegram does not keep them.
    pub allowed_updates: Option<Vec<String>>,
    /// Last message id of the bot's private chats and basic groups.
    pub next_message_id: i64,
    /// Bumped on every change a waiting poll cares about.
    pub changed: watch::Sender<u64>,
}

impl Bot {
    fn new(id: i64) -> Self {
        Self {
            id,
            username: format!("sandbox{id}_bot"),
            updates: VecDeque::new(),
            next_update_id: 1,
            webhook: None,
            poll_generation: 0,
            allowed_updates: None,
            next_message_id: 0,
            changed: watch::channel(0).0,
        }
    }

    pub fn touch(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn user(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "is_bot": true,
            "first_name": format!("Sandbox Bot {}", self.id),
            "username": self.username,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Webhook {
    pub url: String,
    pub has_custom_certificate: bool,
    pub max_connections: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_updates: Option<Value>,
    #[serde(skip)]
    pub secret_token: Option<String>,
}

#[derive(Default)]
pub struct ChatState {
    pub next_message_id: i64,
    pub messages: HashSet<i64>,
}

#[derive(Clone, Debug)]
pub struct StoredFile {
    pub unique_id: String,
    pub id: i64,
    pub access_hash: i64,
    pub file_type: FileType,
    pub disk_path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    /// What getFile answers as `file_path`.
    pub official_path: String,
    /// What Telegram keeps with a document (Bot API names: width, height, duration, length,
    /// performer, title), from its first upload; a later send's own values win.
    pub attributes: Map<String, Value>,
}

/// One call as the sandbox received it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedCall {
    pub seq: u64,
    pub bot_id: i64,
    pub method: String,
    pub http_method: String,
    pub test_env: bool,
    pub encoding: String,
    pub params: Map<String, Value>,
    pub time_ms: i64,
}

/// A fault to inject into the next `times` matching calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    /// Method name (case-insensitive); none matches every method.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub bot_id: Option<i64>,
    #[serde(default = "one")]
    pub times: u32,
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status. 429 gets Telegram's body with `retry_after`; others get the
    /// given raw `body` (an HTML page, say) or a Bot API error.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        content_type: Option<String>,
    },
    /// Wait this long, then answer normally.
    Delay { ms: u64 },
    /// Break the connection without an answer.
    Drop,
}

impl World {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, mut call: RecordedCall) {
        let mut s = self.lock();
        s.next_call += 1;
        call.seq = s.next_call;
        s.calls.push_back(call);
        if s.calls.len() > MAX_CALLS {
            s.calls.pop_front();
        }
    }

    /// The fault for this call, if one is armed (and counts it down).
    pub fn take_fault(&self, bot_id: i64, method: &str) -> Option<FaultAction> {
        let mut s = self.lock();
        let i = s.faults.iter().position(|f| {
            f.times > 0
                && f.bot_id.is_none_or(|b| b == bot_id)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let f = &mut s.faults[i];
        f.times -= 1;
        let action = f.action.clone();
        if f.times == 0 {
            s.faults.remove(i);
        }
        Some(action)
    }

    /// Queues an update for a bot; returns its update_id.
    pub fn push_update(&self, bot_id: i64, mut update: Value) -> i64 {
        let mut s = self.lock();
        let bot = s.bot(bot_id);
        let id = bot.next_update_id;
        bot.next_update_id += 1;
        if let Value::Object(m) = &mut update {
            m.insert("update_id".into(), id.into());
        }
        bot.updates.push_back(update);
        bot.touch();
        id
    }
}

impl State {
    pub fn bot(&mut self, id: i64) -> &mut Bot {
        self.bots.entry(id).or_insert_with(|| Bot::new(id))
    }

    /// Keeps a sent message (a Bot API Message object) for the MTProto face.
    pub fn keep_message(&mut self, bot_id: i64, m: &Value) {
        if let (Some(chat), Some(id)) = (m["chat"]["id"].as_i64(), m["message_id"].as_i64()) {
            self.messages.insert((bot_id, chat, id), m.clone());
        }
    }

    /// A peer by username: a bot, or a registered user (id, is_bot, first name, username).
    pub fn by_username(&self, username: &str) -> Option<(i64, bool, String, String)> {
        let name = username.trim_start_matches('@');
        if let Some(b) = self
            .bots
            .values()
            .find(|b| b.username.eq_ignore_ascii_case(name))
        {
            return Some((
                b.id,
                true,
                format!("Sandbox Bot {}", b.id),
                b.username.clone(),
            ));
        }
        self.users
            .values()
            .find(|u| {
                u.username
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|u| {
                (
                    u.id,
                    false,
                    u.first_name.clone(),
                    u.username.clone().unwrap_or_default(),
                )
            })
    }

    /// A new message id in `chat_id`, sent by `bot_id`. As on Telegram, a bot's private
    /// chats and basic groups share one sequence of ids (so an id alone names a message, as
    /// MTProto's `messages.getMessages` needs); each channel has its own.
    pub fn new_message(&mut self, bot_id: i64, chat_id: i64) -> i64 {
        let id = if chat_id > -1_000_000_000_000 {
            let b = self.bot(bot_id);
            b.next_message_id += 1;
            b.next_message_id
        } else {
            let c = self.chats.entry(chat_id).or_default();
            c.next_message_id += 1;
            c.next_message_id
        };
        self.chats.entry(chat_id).or_default().messages.insert(id);
        id
    }
}
