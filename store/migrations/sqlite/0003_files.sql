-- Files a bot fetched (getFile, or an official /file/ path): where their bytes are and under
-- which token-free path they are served. `path` is `<bot_username>/<name>` for getFile, or
-- `official:<bot_id>/<official path>` for a file cached from the official download path.
CREATE TABLE IF NOT EXISTS files (
    bot_id          INTEGER NOT NULL,
    file_unique_id  TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    path            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    size            INTEGER NOT NULL,
    blob_key        TEXT NOT NULL,
    file_name       TEXT,
    mime_type       TEXT,
    stored_ms       INTEGER NOT NULL,
    PRIMARY KEY (bot_id, file_unique_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS files_by_path ON files (path);

-- One MTProto session per bot, sealed under the cluster key.
CREATE TABLE IF NOT EXISTS mtproto_sessions (
    bot_id      INTEGER PRIMARY KEY,
    sealed      TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);
