-- Stored files are evicted least recently served first (issue 11: --bot-quota, --blob-cap):
-- when each was last served (getFile found it, /storage/ or /file/ sent it).
ALTER TABLE files ADD COLUMN served_ms INTEGER;
UPDATE files SET served_ms = stored_ms;
CREATE INDEX files_by_served ON files (served_ms);
CREATE INDEX files_by_blob ON files (blob_key);
