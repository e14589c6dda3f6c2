"""The SQL of the broker's records beside the mail: the event log, the kill audit, and
retention (the reaper's purge of old mail, ended peers and old events). A mixin of
:class:`~.store.Store`, whose ``_read``/``_write``/``_sql`` it uses.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

from claudepeers.broker.records import GONE


class AuditQueries:
    """Events, kills and retention, for :class:`~.store.Store`."""

    guard: Any
    _read: Callable[..., Deferred]
    _write: Callable[..., Deferred]
    _sql: Callable[[str], str]

    # --- events and kills ---------------------------------------------------------------

    def add_event(self, at: float, kind: str, peer_id: str | None, detail: str) -> Deferred:
        """Append to the persistent event log (registrations, departures, kills, errors)."""
        return self._write(
            lambda cursor: cursor.execute(
                self._sql("INSERT INTO events (at, kind, peer_id, detail) VALUES (?, ?, ?, ?)"),
                (at, kind, peer_id, detail),
            )
            and None
        )

    def recent_events(self, limit: int) -> Deferred:
        """The latest ``limit`` persistent events, oldest first, as dicts."""
        return self._read(self._txn_recent_events, limit)

    def _txn_recent_events(self, cursor: Any, limit: int) -> list[dict[str, Any]]:
        cursor.execute(self._sql("SELECT at, kind, peer_id, detail FROM events ORDER BY id DESC LIMIT ?"), (limit,))
        return [
            {"at": row[0], "kind": row[1], "peer_id": row[2], "detail": row[3]}
            for row in reversed(cursor.fetchall())
        ]

    def record_kill(self, at: float, by_id: str, target_id: str, target_pid: int, outcome: str, detail: str) -> Deferred:
        """Audit one kill request and its outcome."""
        return self._write(
            lambda cursor: cursor.execute(
                self._sql(
                    "INSERT INTO kills (at, by_id, target_id, target_pid, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (at, by_id, target_id, target_pid, outcome, detail),
            )
            and None
        )

    def kills(self, limit: int = 100) -> Deferred:
        """The latest kill records, newest first, as dicts."""
        return self._read(self._txn_kills, limit)

    def _txn_kills(self, cursor: Any, limit: int) -> list[dict[str, Any]]:
        cursor.execute(
            self._sql("SELECT at, by_id, target_id, target_pid, outcome, detail FROM kills ORDER BY id DESC LIMIT ?"),
            (limit,),
        )
        keys = ("at", "by_id", "target_id", "target_pid", "outcome", "detail")
        return [dict(zip(keys, row)) for row in cursor.fetchall()]

    # --- retention --------------------------------------------------------------------

    def purge(self, before: float) -> Deferred:
        """Forget read mail older than ``before`` and peers gone before it, with their mail.

        Fires with (messages deleted, peers deleted).
        """
        d = self._write(lambda cursor: self._txn_purge(cursor, before))
        return d.addCallback(self._purged)

    def _purged(self, counts: tuple[int, int]) -> tuple[int, int]:
        if counts[1] and self.guard is not None:
            # Expired peers take their unread mail with them: count the quotas afresh.
            self.guard.recount()
        return counts

    def _txn_purge(self, cursor: Any, before: float) -> tuple[int, int]:
        cursor.execute(self._sql("SELECT id FROM peers WHERE state = ? AND gone_at < ?"), (GONE, before))
        expired = [row[0] for row in cursor.fetchall()]
        deleted = 0
        for peer_id in expired:
            cursor.execute(self._sql("DELETE FROM messages WHERE to_id = ?"), (peer_id,))
            deleted += max(cursor.rowcount, 0)
            cursor.execute(self._sql("DELETE FROM peers WHERE id = ?"), (peer_id,))
        cursor.execute(self._sql("DELETE FROM messages WHERE acked_at IS NOT NULL AND acked_at < ?"), (before,))
        deleted += max(cursor.rowcount, 0)
        cursor.execute(self._sql("DELETE FROM events WHERE at < ?"), (before,))
        return deleted, len(expired)
