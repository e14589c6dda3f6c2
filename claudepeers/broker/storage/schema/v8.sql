-- claude-peers schema, version 8: peers (a Codex peer may be one thread of a shared app-server;
-- each of a host, with its repository's identity across hosts), their messages (with client
-- keys and the sending host), an event log, the kill audit, the brokers of the network
-- (one per host, with a heartbeat) and kill requests across hosts.
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
    gone_at DOUBLE PRECISION, thread_id VARCHAR(64), repo_id TEXT
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
    acked_at DOUBLE PRECISION, client_key VARCHAR(64), from_host VARCHAR(64)
);
CREATE INDEX messages_unread ON messages (to_id, id) WHERE acked_at IS NULL;
CREATE UNIQUE INDEX messages_client_key ON messages (from_id, client_key) WHERE client_key IS NOT NULL;

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

CREATE TABLE brokers (
    host VARCHAR(64) PRIMARY KEY,
    address TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version VARCHAR(32) NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
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
