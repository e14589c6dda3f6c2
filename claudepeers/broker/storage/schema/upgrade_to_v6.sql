-- Version 6: threads and search. A reply names the message it answers (reply_to) and the
-- thread it belongs to (thread_id: the id of the thread's first message; NULL for that first
-- message itself); messages gain a full-text index (SQLite's FTS5, see v6.sql).
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN thread_id INTEGER;
CREATE INDEX messages_thread ON messages (thread_id, id) WHERE thread_id IS NOT NULL;
CREATE TABLE search_progress (
    indexed_upto INTEGER NOT NULL
);
INSERT INTO search_progress (indexed_upto) VALUES (0);
--@ sqlite
CREATE VIRTUAL TABLE messages_search USING fts5(body, content='messages', content_rowid='id');
CREATE TRIGGER messages_search_forget AFTER DELETE ON messages
WHEN old.id <= (SELECT indexed_upto FROM search_progress)
BEGIN
    INSERT INTO messages_search (messages_search, rowid, body) VALUES ('delete', old.id, old.body);
END;
--@ both
