"""The SQL the store's guard (guard.py) needs: unread bytes, the size in use, purging read
mail oldest first, a rescue copy. A mixin of :class:`~claudepeers.broker.storage.store.Store`
(it uses the store's ``_read``, ``_write``, ``_pool``, ``_sql`` and ``dialect``). The backup and
the WAL truncation are SQLite's; the guard asks for them only for a database file."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from twisted.internet.defer import Deferred

from claudepeers.broker.storage.guard import ROW_OVERHEAD as _ROW_OVERHEAD


class GuardQueries:
    """Queries for the guard; every method returns a Deferred."""

    # Provided by Store.
    _pool: Any
    _read: Callable[..., Deferred]
    _write: Callable[[Callable[[Any], Any]], Deferred]
    _sql: Callable[[str], str]
    dialect: Any

    def unread_bytes(self) -> Deferred:
        """({to_id: bytes}, {from_id: bytes}) of unread message bodies."""
        return self._read(self._txn_unread_bytes)

    def _txn_unread_bytes(self, cursor: Any) -> tuple[dict[str, int], dict[str, int]]:
        sums: list[dict[str, int]] = []
        for column in ("to_id", "from_id"):
            cursor.execute(f"SELECT {column}, SUM({self.dialect.octets('body')}) FROM messages "
                           f"WHERE acked_at IS NULL GROUP BY {column}")
            sums.append({row[0]: int(row[1]) for row in cursor.fetchall()})
        return sums[0], sums[1]

    def used_bytes(self) -> Deferred:
        """Bytes of the database in use (SQLite: its pages less the free ones; see Dialect.used_bytes)."""
        return self._pool.runInteraction(self._txn_used_bytes)

    def _txn_used_bytes(self, cursor: Any) -> int:
        return self.dialect.used_bytes(cursor)

    def purge_read(self, wanted: int) -> Deferred:
        """Delete read messages, oldest first, until about ``wanted`` body bytes are freed.

        Never unread mail. Fires with (messages deleted, bytes freed).
        """
        return self._write(lambda cursor: self._txn_purge_read(cursor, wanted))

    def _txn_purge_read(self, cursor: Any, wanted: int) -> tuple[int, int]:
        cursor.execute(self._sql(f"SELECT id, {self.dialect.octets('body')} + ? FROM messages "
                                 "WHERE acked_at IS NOT NULL ORDER BY id"), (_ROW_OVERHEAD,))
        freed = count = last = 0
        while freed < wanted and (row := cursor.fetchone()) is not None:
            last, freed, count = row[0], freed + row[1], count + 1
        if count:
            cursor.execute(self._sql("DELETE FROM messages WHERE acked_at IS NOT NULL AND id <= ?"), (last,))
        return count, freed

    def backup_to(self, target: str) -> Deferred:
        """Copy the database as this connection sees it to ``target`` (SQLite's backup API)."""

        def copy(connection: Any) -> None:
            destination = sqlite3.connect(target)
            try:
                connection.backup(destination)
            finally:
                destination.close()

        return self._pool.runWithConnection(copy)

    def truncate_wal(self) -> Deferred:
        """Checkpoint the WAL into the database this connection has open and truncate it."""
        return self._pool.runInteraction(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
