"""The store: the broker's SQL of peers and messages, run in adbapi's thread, group-committed.

Functions that run in the pool thread are named ``_txn_*``, take a cursor and return
plain data (STYLE habit 5). The queue and the group commit are :mod:`.groupcommit`'s;
the SQL of other tables is in query mixins beside this file (``audit_sql.py`` events,
kills and retention; ``threads_sql.py``, ``search_fts5.py``, ``coord_sql.py``,
``guard_sql.py``). Consecutive new messages of a batch go in as multi-row INSERTs.

SQL is written with ``?`` placeholders and translated in one place (:meth:`Store._sql`)
so a PostgreSQL pool runs the same statements (DESIGN 7); what differs between the engines
is asked of the pool's :mod:`dialect <.dialect>`.
"""

from __future__ import annotations

from dataclasses import astuple, fields
from operator import attrgetter
from typing import Any, Iterable, Sequence

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from claudepeers.broker.records import GONE, Message, NewMessage, PeerRecord
from claudepeers.broker.storage import database
from claudepeers.broker.storage.audit_sql import AuditQueries
from claudepeers.broker.storage.dialect import Dialect, for_pool
from claudepeers.broker.storage.groupcommit import (  # noqa: F401 - StoreError and the others re-exported
    GroupCommit,
    StoreError,
    as_store_error,
    reported_error,
)
from claudepeers.common import dsn as dsns
from claudepeers.broker.storage.coord_sql import CoordQueries
from claudepeers.broker.storage.guard_sql import GuardQueries
from claudepeers.broker.storage.search_fts5 import Fts5Search
from claudepeers.broker.storage.threads_sql import ThreadQueries

PEER_COLUMNS = [f.name for f in fields(PeerRecord)]
MESSAGE_COLUMNS = [f.name for f in fields(Message)]
#: The columns a new message is inserted with: every Message field but id and acked_at.
NEW_MESSAGE_COLUMNS = [f.name for f in fields(NewMessage)]
assert NEW_MESSAGE_COLUMNS == MESSAGE_COLUMNS[1:-1], "NewMessage must be Message without id and acked_at"
_new_message_values = attrgetter(*NEW_MESSAGE_COLUMNS)
#: The columns of a multi-row INSERT: a new message's and its client_key (None for a plain send).
KEYED_MESSAGE_COLUMNS = [*NEW_MESSAGE_COLUMNS, "client_key"]


def open_pool(path: str) -> adbapi.ConnectionPool:
    """The store's pool for ``path``: one sqlite3 connection (SQLite wants a single writer),
    configured for WAL; for a PostgreSQL DSN, psycopg's (:mod:`.pgpool`)."""
    if dsns.is_postgres(path):
        from claudepeers.broker.storage import pgpool

        return pgpool.open_pool(path)
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=database.configure,
        cp_reconnect=True,
    )


class Store(GuardQueries, ThreadQueries, Fts5Search, CoordQueries, AuditQueries, GroupCommit):
    """Asynchronous access to the broker's tables; every method returns a Deferred."""

    log = Logger()
    #: For the query mixins (threads_sql.py, search_fts5.py): a message's columns, and its row's Message.
    _message_columns = ", ".join(MESSAGE_COLUMNS)

    def __init__(self, pool: adbapi.ConnectionPool, dialect: Dialect | None = None) -> None:
        super().__init__(pool)
        #: The engine's words where SQL differs; found from the pool unless given.
        self.dialect = dialect or for_pool(pool)
        # Multi-row INSERT ... RETURNING, one statement per power-of-two run of rows: few
        # distinct statements, so they all stay in sqlite3's statement cache. A row whose
        # (from_id, client_key) exists is skipped (ON CONFLICT DO NOTHING) and looked up.
        row = f"({', '.join('?' for _ in KEYED_MESSAGE_COLUMNS)})"
        self._insert_messages = {
            size: self._sql(
                f"INSERT INTO messages ({', '.join(KEYED_MESSAGE_COLUMNS)}) VALUES {', '.join([row] * size)} "
                "ON CONFLICT DO NOTHING RETURNING id, from_id, client_key"
            )
            for size in _RUN_SIZES
        }
        # PostgreSQL takes any number of rows in one short statement of column arrays instead,
        # and so the acknowledgements of a batch (one round trip to the server for all of them).
        self._insert_arrays = self.dialect.insert_arrays(
            "messages", KEYED_MESSAGE_COLUMNS, {"verified": "bigint", "sent_at": "float8", "reply_to": "bigint",
                                                 "thread_id": "bigint"},
            "ON CONFLICT DO NOTHING RETURNING id, from_id, client_key")
        self._acknowledge_arrays = (
            "UPDATE messages SET acked_at = v.at FROM unnest(%b::text[], %b::bigint[], %b::float8[]) AS v (to_id, id, at) "
            "WHERE messages.id = v.id AND messages.to_id = v.to_id AND messages.acked_at IS NULL "
            "RETURNING messages.id, messages.from_id, octet_length(messages.body), messages.to_id"
        ) if self.dialect.postgresql else None
        #: Writes of one kind that a batch runs together (consecutive ones) in fewer statements.
        self._groups[_NewMessageWrite] = self._txn_add_messages
        if self._acknowledge_arrays is not None:
            # PostgreSQL: the acknowledgements first, in one statement, and then the new messages
            # form longer runs. Safe to move: an acknowledgement names messages already committed
            # (their ids were answered), and it touches only their acked_at, which no other
            # write of the batch reads.
            self._groups[_AckWrite] = self._txn_acknowledge_many
            self._runs_first = _AckWrite
        # One UPDATE per push answered shown: built once per padded size (see _txn_acknowledge).
        self._acknowledge = {
            size: self._sql(
                "UPDATE messages SET acked_at = ? WHERE to_id = ? AND acked_at IS NULL "
                f"AND id IN ({', '.join('?' * size)}) RETURNING id, from_id, {self.dialect.octets('body')}"
            )
            for size in _ACK_SIZES
        }
        self._find_keyed = self._sql(
            f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE from_id = ? AND client_key = ?"
        )

    # --- peers ------------------------------------------------------------------------

    def load_peers(self, include_gone: bool = True) -> Deferred:
        """Every stored peer (gone ones too unless told otherwise), as PeerRecords."""
        return self._read(self._txn_load_peers, include_gone)

    def _txn_load_peers(self, cursor: Any, include_gone: bool) -> list[PeerRecord]:
        query = f"SELECT {', '.join(PEER_COLUMNS)} FROM peers"
        params: tuple = ()
        if not include_gone:
            query += " WHERE state <> ?"
            params = (GONE,)
        cursor.execute(self._sql(query), params)
        return [PeerRecord(*row) for row in cursor.fetchall()]

    def save_peer(self, peer: PeerRecord) -> Deferred:
        """Insert or replace one peer row."""
        return self._write(lambda cursor: self._txn_save_peer(cursor, peer))

    def _txn_save_peer(self, cursor: Any, peer: PeerRecord) -> None:
        values = astuple(peer)
        assignments = ", ".join(f"{column} = ?" for column in PEER_COLUMNS[1:])
        cursor.execute(self._sql(f"UPDATE peers SET {assignments} WHERE id = ?"), values[1:] + values[:1])
        if cursor.rowcount == 0:
            marks = ", ".join("?" for _ in PEER_COLUMNS)
            cursor.execute(self._sql(f"INSERT INTO peers ({', '.join(PEER_COLUMNS)}) VALUES ({marks})"), values)

    # --- messages ---------------------------------------------------------------------

    def add_message(self, message: NewMessage) -> Deferred:
        """Store a message; fires with the committed Message (with its id)."""
        return self._write(_NewMessageWrite(self, message, None))

    def add_message_once(self, message: NewMessage, client_key: str) -> Deferred:
        """Store a message unless its sender already stored one under ``client_key``.

        Fires with (Message, stored_now): a repeated send (the same key after a lost
        connection) gets the first message back and stores nothing.
        """
        return self._write(_NewMessageWrite(self, message, client_key))

    def add_messages_together(self, messages: Sequence[tuple[Any, str | None]]) -> list[Deferred]:
        """Queue new messages (NewMessage, client key or None) for one group commit; one
        Deferred each, as add_message (no key) or add_message_once (a key) would give.

        A fan-out's messages would otherwise be two commits in a row: the first write starts
        a transaction of its own and the rest wait for it.
        """
        was_flushing, self._flushing = self._flushing, True  # queue them all first
        try:
            done = [self._write(_NewMessageWrite(self, message, key)) for message, key in messages]
        finally:
            self._flushing = was_flushing
        if not was_flushing and self._pending:
            self._flush()
        return done

    def _txn_add_messages(self, cursor: Any, writes: list[_NewMessageWrite]) -> list[Any]:
        """Insert messages in order with as few statements as possible; each write's result."""
        if self._insert_arrays is not None:
            return self._txn_insert_run(cursor, writes)
        results: list[Any] = []
        start = 0
        while start < len(writes):
            size = next(size for size in _RUN_SIZES if size <= len(writes) - start)
            results += self._txn_insert_run(cursor, writes[start : start + size])
            start += size
        return results

    def _txn_insert_run(self, cursor: Any, writes: list[_NewMessageWrite]) -> list[Any]:
        rows = [_new_message_values(write.message) for write in writes]
        if self._insert_arrays is not None:
            cursor.execute(self._insert_arrays, [list(column) for column in zip(
                *((*values, write.client_key) for write, values in zip(writes, rows)))])
        else:
            cursor.execute(
                self._insert_messages[len(writes)],
                [value for write, values in zip(writes, rows) for value in (*values, write.client_key)],
            )
        returned = cursor.fetchall()
        # Rows are inserted, and their ids given, in VALUES order; RETURNING lists them in no
        # promised order, so sort. A keyed row that is not among them already existed (or
        # repeats one earlier in this run): it is looked up instead.
        ids = iter(sorted(row[0] for row in returned))
        inserted = {(row[1], row[2]) for row in returned if row[2] is not None}
        results: list[Any] = []
        for write, values in zip(writes, rows):
            key = write.client_key
            if key is None:
                results.append(Message(int(next(ids)), *values))
            elif (write.message.from_id, key) in inserted:
                inserted.discard((write.message.from_id, key))  # a repeat later in the run is not new
                results.append((Message(int(next(ids)), *values), True))
            else:
                cursor.execute(self._find_keyed, (write.message.from_id, key))
                results.append((_message(cursor.fetchone()), False))
        return results

    def acknowledge(self, peer_id: str, message_ids: Sequence[int], when: float) -> Deferred:
        """Mark messages of ``peer_id`` shown; fires with the ids that were newly marked."""
        ids = sorted(set(int(i) for i in message_ids))
        d = self._write(_AckWrite(self, peer_id, ids, when))
        return d.addCallback(self._acknowledged, peer_id)

    def _acknowledged(self, rows: list[tuple[int, str, int]], peer_id: str) -> list[int]:
        if self.guard is not None:
            self.guard.acked(peer_id, rows)
        return [row[0] for row in rows]

    def _txn_acknowledge(self, cursor: Any, peer_id: str, ids: list[int], when: float) -> list[tuple[int, str, int]]:
        # One UPDATE per chunk; RETURNING says which were not marked before (no SELECT),
        # from whom and how big (the guard's quotas).
        marked: list[tuple[int, str, int]] = []
        for start in range(0, len(ids), _ACK_SIZES[-1]):
            chunk = ids[start : start + _ACK_SIZES[-1]]
            # Padded to a power of two with its last id (harmless in IN): few distinct
            # statements, so they stay in sqlite3's statement cache.
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += chunk[-1:] * (size - len(chunk))
            cursor.execute(self._acknowledge[size], (when, peer_id, *chunk))
            marked += sorted(cursor.fetchall())
        return marked

    def _txn_acknowledge_many(self, cursor: Any, writes: list[_AckWrite]) -> list[list[tuple[int, str, int]]]:
        """PostgreSQL: consecutive acknowledgements in one UPDATE; each write's newly marked rows.

        An id asked for twice in the batch is marked by the first asker, as one by one.
        """
        askers: dict[tuple[str, int], int] = {}
        for number, write in enumerate(writes):
            for message_id in write.ids:
                askers.setdefault((write.peer_id, message_id), number)
        keys = list(askers)
        whens = [writes[askers[key]].when for key in keys]
        cursor.execute(self._acknowledge_arrays, ([key[0] for key in keys], [key[1] for key in keys], whens))
        marked: list[list[tuple[int, str, int]]] = [[] for _ in writes]
        for message_id, from_id, size, to_id in cursor.fetchall():
            marked[askers[(to_id, message_id)]].append((message_id, from_id, size))
        return [sorted(rows) for rows in marked]

    def unread(self, peer_id: str, limit: int | None = None, after_id: int = 0) -> Deferred:
        """Unacknowledged messages of ``peer_id`` in order (ids above ``after_id``)."""
        return self._read(self._txn_unread, peer_id, limit, after_id)

    def _txn_unread(self, cursor: Any, peer_id: str, limit: int | None, after_id: int) -> list[Message]:
        query = (
            f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages "
            "WHERE to_id = ? AND acked_at IS NULL AND id > ? ORDER BY id"
        )
        params: tuple = (peer_id, after_id)
        if limit is not None:
            query += " LIMIT ?"
            params += (limit,)
        cursor.execute(self._sql(query), params)
        return [_message(row) for row in cursor.fetchall()]

    def inbox(self, peer_id: str, limit: int) -> Deferred:
        """The latest ``limit`` messages to ``peer_id``, read or not, oldest first."""
        return self._read(self._txn_inbox, peer_id, limit)

    def _txn_inbox(self, cursor: Any, peer_id: str, limit: int) -> list[Message]:
        cursor.execute(
            self._sql(f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE to_id = ? ORDER BY id DESC LIMIT ?"),
            (peer_id, limit),
        )
        return [_message(row) for row in reversed(cursor.fetchall())]

    def unread_counts(self) -> Deferred:
        """{peer_id: number of unacknowledged messages} for every peer that has some."""
        return self._read(self._txn_unread_counts)

    def _txn_unread_counts(self, cursor: Any) -> dict[str, int]:
        cursor.execute(self._sql("SELECT to_id, COUNT(*) FROM messages WHERE acked_at IS NULL GROUP BY to_id"))
        return {row[0]: int(row[1]) for row in cursor.fetchall()}

    def message_states(self, from_id: str, message_ids: Iterable[int]) -> Deferred:
        """{id: (to_id, acked_at)} for the given ids sent by ``from_id``."""
        ids = sorted(set(int(i) for i in message_ids))[:1000]
        return self._read(self._txn_message_states, from_id, ids)

    def _txn_message_states(self, cursor: Any, from_id: str, ids: list[int]) -> dict[int, tuple[str, float | None]]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        cursor.execute(
            self._sql(f"SELECT id, to_id, acked_at FROM messages WHERE from_id = ? AND id IN ({marks})"),
            (from_id, *ids),
        )
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}

    def notify(self, channel: str, payload: str = "") -> Deferred:
        """PostgreSQL: ``pg_notify(channel, payload)`` in the next group commit, so listeners
        (storage/listener.py) are woken when, and only if, the writes queued before it commit.
        SQLite has no other host to wake: nothing is done. Fires after the commit."""
        if not self.dialect.postgresql:
            return succeed(None)
        return self._write(lambda cursor: cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload)) and None)


#: Row counts of the multi-row INSERT statements (a batch is split into runs of these).
_RUN_SIZES = (256, 128, 64, 32, 16, 8, 4, 2, 1)
#: Id counts of the acknowledging UPDATE statements (a list is padded up to one of these).
_ACK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _NewMessageWrite:
    """A queued ``add_message`` or ``add_message_once``: recognised by
    :meth:`Store._txn_batch` so that consecutive ones share INSERT statements, and
    callable alone (a failed batch retries its writes one by one)."""

    __slots__ = ("client_key", "message", "_store")

    def __init__(self, store: Store, message: NewMessage, client_key: str | None) -> None:
        self._store = store
        self.message = message
        self.client_key = client_key

    def __call__(self, cursor: Any) -> Any:
        return self._store._txn_add_messages(cursor, [self])[0]


class _AckWrite:
    """A queued ``acknowledge``: consecutive ones share one UPDATE on PostgreSQL; callable alone."""

    __slots__ = ("ids", "peer_id", "when", "_store")

    def __init__(self, store: Store, peer_id: str, ids: list[int], when: float) -> None:
        self._store = store
        self.peer_id = peer_id
        self.ids = ids
        self.when = when

    def __call__(self, cursor: Any) -> Any:
        return self._store._txn_acknowledge(cursor, self.peer_id, self.ids, self.when)


def _message(row: Sequence[Any]) -> Message:
    values = list(row)
    values[6] = bool(values[6])
    return Message(*values)


Store._to_message = staticmethod(_message)  # type: ignore[assignment]
