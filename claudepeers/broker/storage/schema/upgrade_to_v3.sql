-- Version 3: a client-chosen key per message, so a send repeated after a lost connection
-- is stored once (the broker answers the repeat with the first message's id).
ALTER TABLE messages ADD COLUMN client_key VARCHAR(64);
CREATE UNIQUE INDEX messages_client_key ON messages (from_id, client_key);
