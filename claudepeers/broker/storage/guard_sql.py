"""The SQL the store's guard (guard.py) needs: unread bytes, the size in use, purging read
mail oldest first, a rescue copy. A mixin of :class:`~claudepeers.broker.storage.store.Store`
(it uses the store's ``_read``, ``_write``, ``_pool`` and ``_sql``)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Callable

from twisted.internet.defer import Deferred

from claudepeers.broker.storage.guard import ROW_OVERHEAD as _ROW_OVERHEAD

#: Events kept when the bound makes room (the broker loads this many at start).
KEPT_EVENTS = 200
#: Per event, what its row costs beyond its detail text (an estimate, as ROW_OVERHEAD).
_EVENT_OVERHEAD = 64


def _wal_bytes(cursor: Any) -> int:
    """The size of the main database's write-ahead log file (0 without one)."""
    path = next((row[2] for row in cursor.execute("PRAGMA database_list").fetchall() if row[1] == "main"), "")
    try:
        return os.stat(f"{path}-wal").st_size if path else 0
    except OSError:
        return 0


class GuardQueries:
    """Queries for the guard; every method returns a Deferred."""

    # Provided by Store.
    _pool: Any
    _read: Callable[..., Deferred]
    _write: Callable[[Callable[[Any], Any]], Deferred]
    _sql: Callable[[str], str]

    def unread_bytes(self) -> Deferred:
        """({to_id: bytes}, {from_id: bytes}) of unread message bodies."""
        return self._read(self._txn_unread_bytes)

    def _txn_unread_bytes(self, cursor: Any) -> tuple[dict[str, int], dict[str, int]]:
        sums: list[dict[str, int]] = []
        for column in ("to_id", "from_id"):
            cursor.execute(f"SELECT {column}, SUM(length(CAST(body AS BLOB))) FROM messages "
                           f"WHERE acked_at IS NULL GROUP BY {column}")
            sums.append({row[0]: int(row[1]) for row in cursor.fetchall()})
        return sums[0], sums[1]

    def used_bytes(self) -> Deferred:
        """Bytes of the database in use: its pages less the free ones, and its write-ahead log
        (up to a checkpoint's worth, ~4 MB, until a purge truncates it)."""
        return self._pool.runInteraction(self._txn_used_bytes)

    def _txn_used_bytes(self, cursor: Any) -> int:
        values = [cursor.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")]
        return (values[0] - values[1]) * values[2] + _wal_bytes(cursor)

    def purge_read(self, wanted: int) -> Deferred:
        """Delete read messages, oldest first, until about ``wanted`` body bytes are freed.

        Never unread mail. When read mail is not enough, the oldest events too, down to the
        newest KEPT_EVENTS. Fires with (messages deleted, bytes freed, events deleted).
        """
        return self._write(lambda cursor: self._txn_purge_read(cursor, wanted))

    def _txn_purge_read(self, cursor: Any, wanted: int) -> tuple[int, int, int]:
        cursor.execute(self._sql("SELECT id, length(CAST(body AS BLOB)) + ? FROM messages "
                                 "WHERE acked_at IS NOT NULL ORDER BY id"), (_ROW_OVERHEAD,))
        freed = count = last = events = 0
        while freed < wanted and (row := cursor.fetchone()) is not None:
            last, freed, count = row[0], freed + row[1], count + 1
        if count:
            cursor.execute(self._sql("DELETE FROM messages WHERE acked_at IS NOT NULL AND id <= ?"), (last,))
        if freed < wanted:
            # Then the event log, oldest first, down to what a restart loads (the kill audit stays).
            cursor.execute(self._sql("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?"), (KEPT_EVENTS - 1,))
            row = cursor.fetchone()
            if row is not None:
                cursor.execute(self._sql("SELECT COUNT(*), COALESCE(SUM(length(CAST(detail AS BLOB)) + ?), 0) "
                                         "FROM events WHERE id < ?"), (_EVENT_OVERHEAD, row[0]))
                events, event_bytes = cursor.fetchone()
                cursor.execute(self._sql("DELETE FROM events WHERE id < ?"), (row[0],))
                freed += int(event_bytes)
        return count, freed, events

    def backup_to(self, target: str) -> Deferred:
        """Copy the database as this connection sees it to ``target`` (SQLite's backup API)."""

        def copy(connection: Any) -> None:
            destination = sqlite3.connect(target)
            try:
                connection.backup(destination)
            finally:
                destination.close()

        return self._pool.runWithConnection(copy)

    def shrink_wal(self) -> Deferred:
        """After a purge: fold the WAL into the database and truncate it, so that the bytes
        counted in it are given back (our one connection is the only reader)."""
        return self._pool.runInteraction(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    def truncate_wal(self) -> Deferred:
        """Checkpoint the WAL into the database this connection has open and truncate it."""
        return self._pool.runInteraction(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
