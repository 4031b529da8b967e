//! Telegram's flood limits, when turned on (`telepipe sandbox --flood-limits`, or
//! `POST /control/limits {"enabled": true}`): a bot that sends or edits faster than Telegram
//! allows gets Telegram's `429 Too Many Requests: retry after N`, so a flood control is tested
//! against the rules it must keep. Off by default: the other tests send as fast as they like.
//!
//! The rules (Telegram's guidance, `notes/FLOOD.md`), as token buckets: per private chat about
//! one message a second with a burst of three; per group, supergroup or channel twenty a
//! minute; per bot thirty a second overall, or a thousand a second for sends with
//! `allow_paid_broadcast`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A bucket's size and how fast it fills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub burst: f64,
    pub per_second: f64,
}

pub const PRIVATE: Rule = Rule {
    burst: 3.0,
    per_second: 1.0,
};
pub const GROUP: Rule = Rule {
    burst: 20.0,
    per_second: 20.0 / 60.0,
};
pub const BOT: Rule = Rule {
    burst: 30.0,
    per_second: 30.0,
};
pub const PAID: Rule = Rule {
    burst: 1000.0,
    per_second: 1000.0,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Chat(i64, i64),
    Bot(i64),
    Paid(i64),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Seconds until a token is there, after filling up to now.
    fn wait(&mut self, rule: Rule, now: Instant) -> f64 {
        let filled = now.duration_since(self.at).as_secs_f64() * rule.per_second;
        self.tokens = (self.tokens + filled).min(rule.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            0.0
        } else {
            (1.0 - self.tokens) / rule.per_second
        }
    }
}

#[derive(Default)]
pub struct Limits {
    enabled: AtomicBool,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

/// Whether a method puts or changes a message in a chat: what the limits count.
pub fn counted(method: &str) -> bool {
    let m = method.to_ascii_lowercase();
    (m.starts_with("send") && m != "sendchataction")
        || m.starts_with("editmessage")
        || matches!(
            m.as_str(),
            "copymessage" | "copymessages" | "forwardmessage" | "forwardmessages"
        )
}

impl Limits {
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        if !on {
            self.lock().clear();
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one message of `bot` to `chat` (private or not), or says how many seconds to
    /// wait: Telegram's `retry_after`. Nothing is taken from any bucket when refused.
    pub fn admit(&self, bot: i64, chat: i64, private: bool, paid: bool) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let chat_rule = if private { PRIVATE } else { GROUP };
        let (bot_key, bot_rule) = if paid {
            (Key::Paid(bot), PAID)
        } else {
            (Key::Bot(bot), BOT)
        };
        let mut buckets = self.lock();
        let mut wait = 0f64;
        for (key, rule) in [(Key::Chat(bot, chat), chat_rule), (bot_key, bot_rule)] {
            let b = buckets.entry(key).or_insert(Bucket {
                tokens: rule.burst,
                at: now,
            });
            wait = wait.max(b.wait(rule, now));
        }
        if wait > 0.0 {
            return Err(wait.ceil().max(1.0) as u64);
        }
        for key in [Key::Chat(bot, chat), bot_key] {
            if let Some(b) = buckets.get_mut(&key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_chat_takes_a_burst_of_three_then_one_a_second() {
        let l = Limits::default();
        assert_eq!(l.admit(1, 5, true, false), Ok(()), "off: anything goes");
        l.set_enabled(true);
        for _ in 0..3 {
            assert_eq!(l.admit(1, 5, true, false), Ok(()));
        }
        assert_eq!(l.admit(1, 5, true, false), Err(1));
        // Another chat, another bot: their own buckets.
        assert_eq!(l.admit(1, 6, true, false), Ok(()));
        assert_eq!(l.admit(2, 5, true, false), Ok(()));
    }

    #[test]
    fn a_group_takes_twenty_a_minute_and_a_bot_thirty_a_second() {
        let l = Limits::default();
        l.set_enabled(true);
        for _ in 0..20 {
            assert_eq!(l.admit(1, -5, false, false), Ok(()));
        }
        assert_eq!(l.admit(1, -5, false, false), Err(3));
        // Thirty chats at once fill the bot's second; paid broadcasts have their own lane.
        let l = Limits::default();
        l.set_enabled(true);
        for chat in 0..30 {
            assert_eq!(l.admit(1, 100 + chat, true, false), Ok(()));
        }
        assert_eq!(l.admit(1, 200, true, false), Err(1));
        assert_eq!(l.admit(1, 200, true, true), Ok(()));
    }

    #[test]
    fn sends_and_edits_count_reads_do_not() {
        for m in [
            "sendMessage",
            "SENDPHOTO",
            "editMessageText",
            "copyMessage",
            "forwardMessages",
        ] {
            assert!(counted(m), "{m}");
        }
        for m in [
            "getMe",
            "sendChatAction",
            "getUpdates",
            "deleteMessage",
            "editForumTopic",
        ] {
            assert!(!counted(m), "{m}");
        }
    }
}
