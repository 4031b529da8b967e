//! The bot token. It exists in clear only inside this type, which never prints it.

use crate::ids::BotId;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token does not have the shape <bot id>:<secret>")]
    Shape,
}

/// A token of the right shape: `<bot id>:<secret>`, the id a positive integer, the secret
/// 30–100 characters of `[A-Za-z0-9_-]` (Telegram's are 35). The shape check is all the
/// gateway can do without asking Telegram; it is enough to refuse garbage without a round trip.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken {
    value: String,
    bot_id: BotId,
}

impl BotToken {
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let (id, secret) = s.split_once(':').ok_or(TokenError::Shape)?;
        // A leading zero is refused as Telegram refuses it: `0123` and `123` would otherwise be
        // two spellings, and two tenants, of one bot.
        if id.is_empty()
            || id.len() > 18
            || id.starts_with('0')
            || !id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(TokenError::Shape);
        }
        if !(30..=100).contains(&secret.len())
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TokenError::Shape);
        }
        let bot_id: i64 = id.parse().map_err(|_| TokenError::Shape)?;
        if bot_id <= 0 {
            return Err(TokenError::Shape);
        }
        Ok(Self {
            value: s.to_owned(),
            bot_id: BotId(bot_id),
        })
    }

    pub fn bot_id(&self) -> BotId {
        self.bot_id
    }

    /// The token in clear. Callers put it in an upstream URL and nowhere else.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotToken({}:***)", self.bot_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_telegram_shaped_tokens() {
        let t = BotToken::parse("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        assert_eq!(t.bot_id(), BotId(123456789));
        assert!(!format!("{t:?}").contains("AAHdq"));
    }

    #[test]
    fn refuses_wrong_shapes() {
        for bad in [
            "",
            "123",
            ":AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            "abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            "0:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            "0123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            "-5:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            "123:short",
            "123:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDs/w",
            "123:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw:x",
            "99999999999999999999:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        ] {
            assert_eq!(BotToken::parse(bad), Err(TokenError::Shape), "{bad}");
        }
    }
}
