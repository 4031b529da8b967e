-- telepipe store, SQLite flavour. The same logical tables exist in CQL (issue 3); keep the two
-- in step. Times are ms since the epoch.

-- The audit log: one row per call, written when its outcome is known.
CREATE TABLE IF NOT EXISTS calls (
    bot_id        INTEGER NOT NULL,
    day           INTEGER NOT NULL,   -- received_ms / 86400000, the CQL partition bucket
    call_id       TEXT    NOT NULL,
    received_ms   INTEGER NOT NULL,
    token_fp      TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    http_method   TEXT    NOT NULL,
    test_env      INTEGER NOT NULL,
    params        TEXT    NOT NULL,   -- JSON object, secrets redacted
    blobs         TEXT    NOT NULL,   -- JSON array of blob references
    outcome       TEXT    NOT NULL,   -- ok | error | rejected
    http_status   INTEGER,
    error_code    INTEGER,
    description   TEXT,
    latency_ms    INTEGER,
    queue_ms      INTEGER,
    upstream_ms   INTEGER,
    PRIMARY KEY (bot_id, day, call_id)
);
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (bot_id, received_ms);

-- Outcomes by call id, with an expiry: idempotency for redelivered calls, late replies.
CREATE TABLE IF NOT EXISTS results (
    call_id     TEXT PRIMARY KEY,
    response    TEXT    NOT NULL,     -- JSON of schemas::Response
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_expiry ON results (expires_ms);
