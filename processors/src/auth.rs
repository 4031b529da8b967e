//! Whether a call comes from the bot it names. The ingest checks only that a token is
//! well-formed (what Telegram checks comes with its answer); a gateway method that answers
//! from the gateway's own state (kept updates, flood settings) must ask first, or anyone who
//! knows a bot's id could read or change them.

use crate::Deps;
use schemas::{ApiError, Call, Envelope, Response};

/// `Ok(true)`: the call's token is `kept` (a token the bot used before, sealed); `Ok(false)`:
/// Telegram accepted it (getMe as the bot); `Err`: Telegram's refusal, to answer as it is.
pub(crate) async fn owner(
    deps: &Deps,
    env: &Envelope<Call>,
    kept: Option<&str>,
) -> Result<bool, Response> {
    let bot = env.header.bot_id;
    let Some(token) = &env.payload.token else {
        return Err(Response::from_error(&ApiError::unauthorized()));
    };
    // Sealed tokens differ on every seal (a fresh nonce): compared open.
    let open = |t: &str| {
        deps.sealer
            .open(bot, &schemas::SealedToken(t.to_owned()))
            .ok()
    };
    let given = open(&token.0);
    if given.is_none() {
        return Err(Response::from_error(&ApiError::unauthorized()));
    }
    if kept.is_some_and(|k| open(k) == given) {
        return Ok(true);
    }
    let me = crate::passthrough::execute(
        deps,
        &crate::uploads::as_call(env, "getMe", schemas::CallBody::Empty),
    )
    .await;
    if me.status == 200 {
        Ok(false)
    } else {
        Err(me)
    }
}
