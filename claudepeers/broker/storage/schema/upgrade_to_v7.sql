-- Version 7: coordination. Groups of peers (group:<name> messages reach each member) and
-- claims on files (a peer leases paths or globs of its repository for a while).
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
