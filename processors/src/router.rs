//! Which handler takes a call. Every method goes through unchanged today; the enhanced
//! methods (files, usernames, getMessage, ...) get their own routes as they arrive.

use schemas::Call;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Forward to the Bot API upstream as the bot sent it.
    Passthrough,
}

pub fn route(_call: &Call) -> Route {
    Route::Passthrough
}
