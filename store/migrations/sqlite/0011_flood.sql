-- Flood control per bot (issue 16: setFloodControl): whether it is on and the limits the bot
-- set, as JSON; a bot without a row follows the gateway's `--flood-control`.
CREATE TABLE IF NOT EXISTS flood_settings (
    bot_id      INTEGER PRIMARY KEY,
    settings    TEXT NOT NULL
);
