-- Calls handed to upstream, by call id: a redelivered call with an attempt and no result was in
-- flight when its processor died, and must not be sent again blindly.
CREATE TABLE IF NOT EXISTS attempts (
    call_id     TEXT PRIMARY KEY,
    started_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_expiry ON attempts (expires_ms);
