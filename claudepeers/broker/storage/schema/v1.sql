-- claude-peers schema, version 1: peers, their messages, and an event log.
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
    gone_at DOUBLE PRECISION
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
    acked_at DOUBLE PRECISION
);
CREATE INDEX messages_inbox ON messages (to_id, acked_at, id);
CREATE INDEX messages_sender ON messages (from_id, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at DOUBLE PRECISION NOT NULL,
    kind VARCHAR(32) NOT NULL,
    peer_id VARCHAR(16),
    detail TEXT NOT NULL
);
