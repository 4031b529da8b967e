-- What a call costs the store (issue 10): the record itself and little else. Ids are the 16
-- bytes of the call id, a UUIDv7, so in time order: new rows append at the end of each b-tree
-- instead of dirtying pages all over it, and expired rows are a range at its start (no expiry
-- index). Tables are clustered on their key (WITHOUT ROWID: one b-tree, not a table and an
-- index of its key). The audit row loses the `day` bucket (CQL's partition key; SQLite needs
-- none); besides its key it has one index: a bot's calls in time order.
CREATE TABLE calls_v6 (
    call_id       BLOB    NOT NULL PRIMARY KEY,   -- 16 bytes
    bot_id        INTEGER NOT NULL,
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
    upstream_ms   INTEGER
) WITHOUT ROWID;
INSERT INTO calls_v6
    SELECT unhex(replace(call_id, '-', '')), bot_id, received_ms, token_fp, method, http_method,
           test_env, params, blobs, outcome, http_status, error_code, description, latency_ms,
           queue_ms, upstream_ms
    FROM calls ORDER BY call_id;
DROP TABLE calls;
ALTER TABLE calls_v6 RENAME TO calls;
CREATE INDEX calls_by_bot ON calls (bot_id, received_ms);

-- Outcomes by call id, kept while a redelivered call may need them (a durable bus only).
CREATE TABLE results_v6 (
    call_id     BLOB PRIMARY KEY,     -- 16 bytes
    response    TEXT    NOT NULL,     -- JSON of schemas::Response
    expires_ms  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO results_v6
    SELECT unhex(replace(call_id, '-', '')), response, expires_ms FROM results ORDER BY call_id;
DROP TABLE results;
ALTER TABLE results_v6 RENAME TO results;

-- Calls handed to upstream (a durable bus only): small rows, so the key is the table.
CREATE TABLE attempts_v6 (
    call_id     BLOB PRIMARY KEY,     -- 16 bytes
    started_ms  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO attempts_v6
    SELECT unhex(replace(call_id, '-', '')), started_ms FROM attempts ORDER BY call_id;
DROP TABLE attempts;
ALTER TABLE attempts_v6 RENAME TO attempts;
