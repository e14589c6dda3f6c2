-- claude-peers schema, version 8 (version 7 and the hosts of upgrade_to_v8.sql): peers (a Codex peer may be one thread of a shared app-server),
-- their messages (with client keys, threads of replies), an event log, the kill audit, the
-- groups peers joined and their claims on files, and a full-text index of the messages
-- (SQLite's FTS5, at the end of this file).
-- Portable SQL (SQLite and PostgreSQL); the store substitutes the parameter style.

CREATE TABLE versions (
    version INTEGER NOT NULL
);

CREATE TABLE peers (
    id VARCHAR(16) PRIMARY KEY,
    host VARCHAR(255) NOT NULL,
    agent_pid INTEGER NOT NULL,
    agent_start DOUBLE PRECISION NOT NULL,
    client_type VARCHAR(32) NOT NULL,
    name VARCHAR(255) NOT NULL,
    cwd TEXT NOT NULL,
    git_root TEXT,
    git_common_dir TEXT,
    branch TEXT,
    tty TEXT,
    summary TEXT NOT NULL,
    state VARCHAR(16) NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    gone_at DOUBLE PRECISION, thread_id VARCHAR(64)
);
CREATE INDEX peers_session ON peers (host, agent_pid);
CREATE INDEX peers_state ON peers (state);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id VARCHAR(16) NOT NULL,
    from_name VARCHAR(255) NOT NULL,
    from_summary TEXT NOT NULL,
    from_cwd TEXT NOT NULL,
    from_client VARCHAR(32) NOT NULL,
    verified INTEGER NOT NULL,
    to_id VARCHAR(16) NOT NULL,
    body TEXT NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    acked_at DOUBLE PRECISION, client_key VARCHAR(64), reply_to INTEGER, thread_id INTEGER
);
CREATE INDEX messages_unread ON messages (to_id, id) WHERE acked_at IS NULL;
CREATE UNIQUE INDEX messages_client_key ON messages (from_id, client_key) WHERE client_key IS NOT NULL;
CREATE INDEX messages_thread ON messages (thread_id, id) WHERE thread_id IS NOT NULL;

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DOUBLE PRECISION NOT NULL,
    kind VARCHAR(32) NOT NULL,
    peer_id VARCHAR(16),
    detail TEXT NOT NULL
);

CREATE TABLE kills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DOUBLE PRECISION NOT NULL,
    by_id VARCHAR(16) NOT NULL,
    target_id VARCHAR(16) NOT NULL,
    target_pid INTEGER NOT NULL,
    outcome VARCHAR(32) NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX kills_target ON kills (target_id, at);

-- Groups that group:<name> messages go to: one row per member (a group exists while it has
-- members); a peer's rows end when it is gone.
CREATE TABLE group_members (
    group_name VARCHAR(64) NOT NULL,
    peer_id VARCHAR(16) NOT NULL,
    joined_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (group_name, peer_id)
);
CREATE INDEX group_members_peer ON group_members (peer_id);

-- Claims on files: a peer leases a path or glob (relative to its repository's top level) of
-- one repository (its common git dir) until expires_at, for a reason.
CREATE TABLE claims (
    peer_id VARCHAR(16) NOT NULL,
    repo TEXT NOT NULL,
    pattern TEXT NOT NULL,
    reason TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (peer_id, pattern)
);
CREATE INDEX claims_repo ON claims (repo);

-- How far the full-text index has read the messages table (ids up to here are indexed).
CREATE TABLE search_progress (
    indexed_upto INTEGER NOT NULL
);
INSERT INTO search_progress (indexed_upto) VALUES (0);

-- SQLite only (FTS5): the full-text index of message bodies, read by
-- claudepeers/broker/storage/search_fts5.py (a PostgreSQL store would use a tsvector
-- expression index instead). It holds no copy of the text (content='messages'). New mail
-- is indexed in batches, not by a trigger on INSERT, which would cost every send several
-- times its own work; a deleted message leaves the index at once, if it was indexed.
--@ sqlite
CREATE VIRTUAL TABLE messages_search USING fts5(body, content='messages', content_rowid='id');
CREATE TRIGGER messages_search_forget AFTER DELETE ON messages
WHEN old.id <= (SELECT indexed_upto FROM search_progress)
BEGIN
    INSERT INTO messages_search (messages_search, rowid, body) VALUES ('delete', old.id, old.body);
END;
--@ both

-- Version 8: several hosts share one database (DESIGN 7). Each broker is a host with a row
-- and a heartbeat in brokers; a message keeps the host it was sent from (its verified
-- frame names it, and the recipient's host tells that host how it went); a peer keeps
-- the identity of its repository across hosts (root commit and remote URL: paths differ
-- between machines); a kill of a peer of another host is a request that the target's own
-- broker carries out and answers.
CREATE TABLE brokers (
    host VARCHAR(64) PRIMARY KEY,
    address TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version VARCHAR(32) NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
ALTER TABLE messages ADD COLUMN from_host VARCHAR(64);
ALTER TABLE peers ADD COLUMN repo_id TEXT;
CREATE TABLE kill_requests (
    id VARCHAR(32) PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    by_host VARCHAR(64) NOT NULL,
    by_id VARCHAR(16) NOT NULL,
    target_host VARCHAR(64) NOT NULL,
    target_id VARCHAR(16) NOT NULL,
    outcome VARCHAR(32),
    detail TEXT,
    done_at DOUBLE PRECISION
);
CREATE INDEX kill_requests_open ON kill_requests (target_host) WHERE done_at IS NULL;
