-- What a replay and an audit need (issue 11): how the call was encoded, the request as sent
-- (sealed under the cluster key for the bot: token and secret parameters never in clear), and
-- the sha256 of the answer's body (the body itself is the call's result, kept while results
-- are). A bot's calls are listed in the record's order, which is the call id's (a UUIDv7 made
-- on arrival): the index is (bot, call id), so a page after a given call is an index range.
ALTER TABLE calls ADD COLUMN encoding TEXT;
ALTER TABLE calls ADD COLUMN request TEXT;
ALTER TABLE calls ADD COLUMN answer_sha256 BLOB;
DROP INDEX calls_by_bot;
CREATE INDEX calls_by_bot ON calls (bot_id, call_id);

-- Bots by username (learnt from getMe answers): `telepipe audit --bot @name`.
CREATE TABLE bot_usernames (
    username    TEXT    NOT NULL PRIMARY KEY COLLATE NOCASE,
    bot_id      INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) WITHOUT ROWID;
