//! setFloodControl and getFloodControl, the gateway's methods for a bot's own flood control
//! ([`crate::flood`]). The parameters are checked here, before anything runs.

use super::Command;
use crate::flood::{Limits, Rule};
use crate::uploads::text;
use schemas::{ApiError, Call};
use serde_json::Value;

/// A bot's flood control: on or off, with limits (Telegram's where not given).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SetFloodControl {
    pub enabled: bool,
    pub limits: Limits,
}

/// The largest rate or burst a bot may give (a typo's 10^9 would mean "no limit" anyway).
const MAX: f64 = 100_000.0;

fn bad(description: &str) -> ApiError {
    ApiError::bad_request(description)
}

pub(super) fn parse_set(call: &Call) -> Result<Command, ApiError> {
    let params = call.params();
    let enabled = match params.get("enabled").map(|v| text(v).to_ascii_lowercase()) {
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(_) => return Err(bad("enabled must be a Boolean")),
        None => return Err(bad("parameter \"enabled\" is required")),
    };
    let number = |name: &str| -> Result<Option<f64>, ApiError> {
        let Some(v) = params.get(name) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_f64(),
            other => text(other).trim().parse::<f64>().ok(),
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 && n <= MAX => Ok(Some(n)),
            _ => Err(bad(&format!(
                "{name} must be a number above 0 and at most {MAX}"
            ))),
        }
    };
    let mut limits = Limits::default();
    if let Some(b) = number("private_chat_burst")? {
        limits.private.burst = b;
    }
    if let Some(m) = number("private_chat_per_minute")? {
        limits.private.per_second = m / 60.0;
    }
    if let Some(b) = number("group_burst")? {
        limits.group.burst = b;
    }
    if let Some(m) = number("group_per_minute")? {
        limits.group.per_second = m / 60.0;
    }
    // The bot's lanes take a second's worth at once.
    if let Some(s) = number("bot_per_second")? {
        limits.bot = Rule {
            burst: s,
            per_second: s,
        };
    }
    if let Some(s) = number("paid_broadcast_per_second")? {
        limits.paid = Rule {
            burst: s,
            per_second: s,
        };
    }
    // A bucket must hold a whole message, and fill within hours, not centuries.
    if !limits.sane() {
        return Err(bad(
            "each burst must be at least 1, and each rate at least 0.006 a minute",
        ));
    }
    Ok(Command::SetFloodControl(SetFloodControl {
        enabled,
        limits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(query: &str) -> Result<SetFloodControl, String> {
        match parse_set(&super::super::tests::call("setFloodControl", query)) {
            Ok(Command::SetFloodControl(s)) => Ok(s),
            Ok(other) => panic!("{query}: taken as {other:?}"),
            Err(e) => Err(e.description),
        }
    }

    #[test]
    fn set_flood_control_takes_enabled_and_limits_within_bounds() {
        let s = set("enabled=true").unwrap();
        assert!(s.enabled);
        assert_eq!(s.limits, Limits::default());
        let s =
            set("enabled=0&private_chat_per_minute=30&group_burst=5&bot_per_second=10").unwrap();
        assert!(!s.enabled);
        assert_eq!(s.limits.private.per_second, 0.5);
        assert_eq!(s.limits.group.burst, 5.0);
        assert_eq!((s.limits.bot.burst, s.limits.bot.per_second), (10.0, 10.0));
        assert!(set("").unwrap_err().contains("required"));
        assert!(set("enabled=maybe").unwrap_err().contains("Boolean"));
        assert!(set("enabled=1&group_burst=0.5")
            .unwrap_err()
            .contains("burst"));
        assert!(set("enabled=1&bot_per_second=0.5")
            .unwrap_err()
            .contains("burst"));
        assert!(set("enabled=1&private_chat_per_minute=1e-300")
            .unwrap_err()
            .contains("rate"));
        for bad in ["-1", "0", "NaN", "inf", "1e9", "x"] {
            let e = set(&format!("enabled=1&group_per_minute={bad}")).unwrap_err();
            assert!(e.contains("group_per_minute"), "{bad}: {e}");
        }
    }
}
