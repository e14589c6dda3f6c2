"""The SQL of threads: a message's head, a thread's messages, replies after a message.

Portable SQL (SQLite and PostgreSQL alike; the store translates the placeholders). A mixin of
:class:`~claudepeers.broker.storage.store.Store` (it uses the store's ``_read`` and
``_sql``). A thread's id is the id of its first message: that message has ``thread_id``
NULL, every later one the first one's id.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

from claudepeers.broker.records import Message


class ThreadQueries:
    """Queries for threads; every method returns a Deferred."""

    # Provided by Store.
    _read: Callable[..., Deferred]
    _sql: Callable[[str], str]
    _message_columns: str
    _to_message: Callable[[Any], Message]

    def message_head(self, message_id: int) -> Deferred:
        """(from_id, to_id, thread id) of a message, or None when there is none (or it expired)."""
        return self._read(self._txn_message_head, message_id)

    def _txn_message_head(self, cursor: Any, message_id: int) -> tuple[str, str, int] | None:
        cursor.execute(self._sql("SELECT from_id, to_id, thread_id FROM messages WHERE id = ?"), (message_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return row[0], row[1], int(row[2]) if row[2] is not None else message_id

    def thread(self, thread_id: int, participant: str | None, before: int | None, limit: int) -> Deferred:
        """The newest ``limit`` messages of a thread below ``before`` (all when None), oldest
        first, that ``participant`` sent or received (every one when None), and how many
        earlier ones there are."""
        return self._read(self._txn_thread, thread_id, participant, before, limit)

    def _txn_thread(self, cursor: Any, thread_id: int, participant: str | None, before: int | None,
                    limit: int) -> tuple[list[Message], int]:
        where = "(id = ? OR thread_id = ?)"
        params: tuple = (thread_id, thread_id)
        if participant is not None:
            where += " AND (from_id = ? OR to_id = ?)"
            params += (participant, participant)
        if before is not None:
            where += " AND id < ?"
            params += (before,)
        cursor.execute(
            self._sql(f"SELECT {self._message_columns} FROM messages WHERE {where} ORDER BY id DESC LIMIT ?"),
            (*params, limit + 1),
        )
        rows = cursor.fetchall()
        more = 0
        if len(rows) > limit:
            oldest_shown = rows[limit - 1][0]
            cursor.execute(self._sql(f"SELECT COUNT(*) FROM messages WHERE {where} AND id < ?"),
                           (*params, oldest_shown))
            more = int(cursor.fetchone()[0])
        return [self._to_message(row) for row in reversed(rows[:limit])], more

    def replies(self, peer_id: str, thread_id: int, after_id: int, limit: int) -> Deferred:
        """Messages to ``peer_id`` in a thread with ids above ``after_id``, oldest first (shown
        ones too: their ``acked_at`` is set)."""
        return self._read(self._txn_replies, peer_id, thread_id, after_id, limit)

    def _txn_replies(self, cursor: Any, peer_id: str, thread_id: int, after_id: int, limit: int) -> list[Message]:
        cursor.execute(
            self._sql(f"SELECT {self._message_columns} FROM messages "
                      "WHERE thread_id = ? AND to_id = ? AND id > ? ORDER BY id LIMIT ?"),
            (thread_id, peer_id, after_id, limit),
        )
        return [self._to_message(row) for row in cursor.fetchall()]
