//! Everything that talks to Telegram, or speaks its formats.
//!
//! # Layout
//! - [`botapi`]: the Bot API upstream client (plain HTTP with reqwest). Requests go out in the
//!   encoding the bot used; answers come back as bytes, status and content type untouched.
//! - [`file_id`]: Bot API file ids in tdlib's format (used by the sandbox to issue realistic
//!   ids; the full codec with every type comes with big-file support).

pub mod botapi;
pub mod file_id;
