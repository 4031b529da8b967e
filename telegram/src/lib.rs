//! Everything that talks to Telegram, or speaks its formats.
//!
//! # Layout
//! - [`botapi`]: the Bot API upstream client (hyper's client on the hot path, reqwest for
//!   multipart and downloads). Requests go out in the encoding the bot used; answers come back
//!   as bytes, status and content type untouched.
//! - [`file_id`]: the Bot API file id / file_unique_id codec (tdlib's format).
//! - [`mtproto`]: the MTProto backend trait (downloads of any size, as the bot).
//! - [`grammers`]: that backend on grammers-client, one sealed session per bot.
//! - [`message`]: MTProto's messages as Bot API Message objects (getMessage).
//! - [`sent`]: whether the call being processed has gone upstream yet (a task-local flag).
//! - `uploader`: MTProto uploads over connections of their own (no gzip, parts in parallel).

pub mod botapi;
mod conns;
pub mod file_id;
pub mod grammers;
pub mod message;
pub mod mtproto;
pub mod sent;
mod uploader;
