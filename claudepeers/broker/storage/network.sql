-- claude-peers on PostgreSQL: the notifications that carry the network (DESIGN 7).
-- Installed (again) by every broker that starts on a PostgreSQL database; idempotent.
-- A new message for a peer of another host wakes that host's broker in the same
-- transaction (one notification per recipient and statement, naming the range of ids);
-- a change of peers tells every broker to read them again.

CREATE OR REPLACE FUNCTION claude_peers_mail_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN
        SELECT p.host AS host, m.to_id AS to_id, MIN(m.id) AS low, MAX(m.id) AS high
        FROM new_messages m JOIN peers p ON p.id = m.to_id
        WHERE m.from_host IS DISTINCT FROM p.host
        GROUP BY p.host, m.to_id
    LOOP
        PERFORM pg_notify('claude_peers:' || r.host, 'mail ' || r.to_id || ' ' || r.low || ' ' || r.high);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION claude_peers_peers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT DISTINCT host FROM changed_peers LOOP
        PERFORM pg_notify('claude_peers', 'peers ' || r.host);
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS messages_notify ON messages;
CREATE TRIGGER messages_notify AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages FOR EACH STATEMENT EXECUTE FUNCTION claude_peers_mail_notify();

DROP TRIGGER IF EXISTS peers_insert_notify ON peers;
CREATE TRIGGER peers_insert_notify AFTER INSERT ON peers
    REFERENCING NEW TABLE AS changed_peers FOR EACH STATEMENT EXECUTE FUNCTION claude_peers_peers_notify();

DROP TRIGGER IF EXISTS peers_update_notify ON peers;
CREATE TRIGGER peers_update_notify AFTER UPDATE ON peers
    REFERENCING NEW TABLE AS changed_peers FOR EACH STATEMENT EXECUTE FUNCTION claude_peers_peers_notify();

-- An acknowledgement of mail from another host tells that host in the same transaction
-- (its waiting send_message answers "shown"): one notification per sending host and
-- statement (ids in chunks that fit a payload).
CREATE OR REPLACE FUNCTION claude_peers_ack_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN
        SELECT n.from_host AS host, string_agg(n.id::text, ',') AS ids
        FROM new_rows n JOIN old_rows o ON o.id = n.id JOIN peers p ON p.id = n.to_id
        WHERE o.acked_at IS NULL AND n.acked_at IS NOT NULL AND n.from_host IS NOT NULL
          AND n.from_host IS DISTINCT FROM p.host
        GROUP BY n.from_host, n.id / 500
    LOOP
        PERFORM pg_notify('claude_peers:' || r.host, 'acked ' || r.ids);
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS messages_ack_notify ON messages;
CREATE TRIGGER messages_ack_notify AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION claude_peers_ack_notify();
