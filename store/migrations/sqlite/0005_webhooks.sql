-- Webhooks the gateway keeps for bots (setWebhook), with where polling Telegram stands.
CREATE TABLE IF NOT EXISTS webhooks (
    bot_id              INTEGER PRIMARY KEY,
    url                 TEXT NOT NULL,
    secret_token        TEXT,
    max_connections     INTEGER NOT NULL,
    allowed_updates     TEXT,
    certificate         TEXT,
    token_sealed        TEXT NOT NULL,
    test_env            INTEGER NOT NULL,
    telegram_hook       INTEGER NOT NULL DEFAULT 0,
    poll_offset         INTEGER NOT NULL DEFAULT 0,
    last_error_date     INTEGER,
    last_error_message  TEXT,
    -- Which process polls and delivers for the bot, and until when (a renewed lease).
    lease_owner         TEXT,
    lease_until         INTEGER
);

-- Updates to deliver to a bot's webhook; kept once delivered, so a replayed record is not
-- delivered twice.
CREATE TABLE IF NOT EXISTS updates (
    bot_id      INTEGER NOT NULL,
    update_id   INTEGER NOT NULL,
    body        TEXT NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0,
    -- When it was delivered (or dropped): delivered rows are purged after a week.
    delivered_ms INTEGER,
    PRIMARY KEY (bot_id, update_id)
);
CREATE INDEX IF NOT EXISTS updates_pending ON updates (bot_id, delivered, update_id);
