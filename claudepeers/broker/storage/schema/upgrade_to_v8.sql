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
