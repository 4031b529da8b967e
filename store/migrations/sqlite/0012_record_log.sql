-- The record's bulk moves to append-only files beside the database (store/src/record_log.rs):
-- a new audit row keeps its parameters, blobs and sealed request in the `calls` log, and an
-- answer kept for the audit (embedded mode) in the `answers` log, the row saying where.
-- Rows written before keep theirs in their columns; `params` and `blobs` of a new row are
-- '{}' and '[]'.
CREATE TABLE IF NOT EXISTS record_segments (
    segment     INTEGER PRIMARY KEY AUTOINCREMENT,
    log         INTEGER NOT NULL,          -- 0 calls, 1 answers
    created_ms  INTEGER NOT NULL,
    newest      BLOB,                      -- the newest call id appended
    closed      INTEGER NOT NULL DEFAULT 0
);
-- Answers of calls below `answers_before` in segments up to `answers_seg` were purged
-- (`--retain-results`), whatever their expiry; answers written after the purge go to later
-- segments.
CREATE TABLE IF NOT EXISTS record_state (
    id              INTEGER PRIMARY KEY CHECK (id = 0),
    answers_before  BLOB NOT NULL,
    answers_seg     INTEGER NOT NULL
);
INSERT OR IGNORE INTO record_state (id, answers_before, answers_seg) VALUES (0, x'', 0);
ALTER TABLE calls ADD COLUMN bulk_seg INTEGER;
ALTER TABLE calls ADD COLUMN bulk_off INTEGER;
ALTER TABLE calls ADD COLUMN bulk_len INTEGER;
ALTER TABLE calls ADD COLUMN answer_seg INTEGER;
ALTER TABLE calls ADD COLUMN answer_off INTEGER;
ALTER TABLE calls ADD COLUMN answer_len INTEGER;
ALTER TABLE calls ADD COLUMN answer_expires_ms INTEGER;
