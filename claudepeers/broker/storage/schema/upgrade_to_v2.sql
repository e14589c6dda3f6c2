-- Version 2: an audit table of kill_peer requests (who, whom, when, outcome).
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
