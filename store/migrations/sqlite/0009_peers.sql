-- Usernames a bot resolved over MTProto (issue 13: `@username` for users and bots), lowercased,
-- without the `@`; an entry is used until `expires_ms` and purged by the bot's next resolution.
CREATE TABLE IF NOT EXISTS peers (
    bot_id      INTEGER NOT NULL,
    username    TEXT NOT NULL,
    peer_id     INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    PRIMARY KEY (bot_id, username)
) WITHOUT ROWID;
