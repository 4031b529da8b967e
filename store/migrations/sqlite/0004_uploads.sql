-- The dedupe cache of uploads: the same content sent again by the same bot as the same kind
-- (document, photo, ...) under the same name goes by the file_id Telegram gave the first time.
CREATE TABLE IF NOT EXISTS uploads (
    bot_id      INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    file_id     TEXT NOT NULL,
    stored_ms   INTEGER NOT NULL,
    PRIMARY KEY (bot_id, sha256, kind, file_name)
);
