-- Polling bots (issue 15): the gateway keeps a bot's updates for its getUpdates. Each reader of
-- a bot (`reader` on getUpdates; '' is the bot itself) has its own next update_id; `read_ms`
-- is when it last asked, so the gateway stops polling Telegram for a bot nobody reads.
CREATE TABLE IF NOT EXISTS readers (
    bot_id          INTEGER NOT NULL,
    reader          TEXT NOT NULL,
    next_update_id  INTEGER NOT NULL,
    read_ms         INTEGER NOT NULL,
    PRIMARY KEY (bot_id, reader)
) WITHOUT ROWID;
-- When an update was kept: an update nobody confirms is dropped after 24 hours, as Telegram
-- does ("they will not be kept longer than 24 hours"). Older rows have none and are left.
ALTER TABLE updates ADD COLUMN kept_ms INTEGER;
CREATE INDEX IF NOT EXISTS updates_kept ON updates (delivered, kept_ms);
