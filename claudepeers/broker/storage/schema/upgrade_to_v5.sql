-- Version 5: a peer may be one thread of an agent process. Interactive Codex runs every
-- thread of a user in one background app-server, so (host, agent pid, start) no longer
-- names one session; the thread id completes the key (NULL: the process is the session).
ALTER TABLE peers ADD COLUMN thread_id VARCHAR(64);
