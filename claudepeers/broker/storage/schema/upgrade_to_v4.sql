-- Version 4: cheaper writes. Every message was written to four B-trees and every
-- acknowledgement moved its entry within the inbox index; now the unread index holds only
-- unread mail (an acknowledgement just removes the entry), the sender index is gone
-- (message states look messages up by id), and only keyed sends enter the key index.
DROP INDEX messages_inbox;
DROP INDEX messages_sender;
DROP INDEX messages_client_key;
CREATE INDEX messages_unread ON messages (to_id, id) WHERE acked_at IS NULL;
CREATE UNIQUE INDEX messages_client_key ON messages (from_id, client_key) WHERE client_key IS NOT NULL;
