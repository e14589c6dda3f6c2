"""Searching a peer's own mail with SQLite's FTS5: every FTS5-specific statement lives here.

A mixin of :class:`~claudepeers.broker.storage.store.Store`. The index is the virtual table
``messages_search`` of schema v6 (external content: it keeps no copy of the bodies). New
mail is not indexed by a trigger on INSERT, which would cost every send several times its
own work (measured on 100,000 rows in runs of 64: about 90,000 plain inserts/s, 11,000 with
such a trigger); instead ``search_progress.indexed_upto`` says how far the index has read,
the broker's reaper indexes new mail in batches, and a search first indexes what is left.
A deleted message leaves the index by the schema's trigger (if it was indexed).

A PostgreSQL store would put a mixin with the same three methods in place of this one
(``to_tsvector`` and a GIN expression index, no catch-up): the broker's logic calls only
:meth:`search_words`, :meth:`search` and :meth:`index_for_search`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed

from claudepeers.broker.records import Message

#: Rows indexed per transaction while a search catches up: other writes go in between.
CATCH_UP_ROWS = 5000
#: What a word is: letters, digits and underscores (FTS5's unicode61 tokenizer splits so too).
_WORD = re.compile(r"\w+")


class Fts5Search:
    """Full-text search of a peer's mail; every method but search_words returns a Deferred."""

    # Provided by Store.
    _read: Callable[..., Deferred]
    _write: Callable[[Callable[[Any], Any]], Deferred]
    _message_columns: str
    _to_message: Callable[[Any], Message]

    @staticmethod
    def search_words(text: str) -> list[str]:
        """The words of a search text (what the query looks for)."""
        return _WORD.findall(text.lower())

    def index_for_search(self, limit: int = CATCH_UP_ROWS) -> Deferred:
        """Index up to ``limit`` messages not indexed yet; fires with True if more are left.
        (PostgreSQL has no FTS5 index here: nothing to do, searches scan, see _txn_search.)"""
        if self.dialect.postgresql:
            return succeed(False)
        return self._write(lambda cursor: self._txn_index(cursor, limit))

    def _txn_index(self, cursor: Any, limit: int) -> bool:
        cursor.execute("SELECT indexed_upto FROM search_progress")
        upto = int(cursor.fetchone()[0])
        cursor.execute("SELECT MAX(id) FROM messages")
        newest = cursor.fetchone()[0]
        if newest is None or newest <= upto:
            return False
        last = min(int(newest), upto + limit)
        cursor.execute("INSERT INTO messages_search (rowid, body) SELECT id, body FROM messages "
                       "WHERE id > ? AND id <= ?", (upto, last))
        cursor.execute("UPDATE search_progress SET indexed_upto = ?", (last,))
        return last < newest

    def search(self, peer_id: str, words: list[str], limit: int) -> Deferred:
        """Messages ``peer_id`` sent or received that contain every word (a word also matches
        the longer words it begins), newest first; the index catches up first."""
        # Each word quoted, so nothing in it is FTS5 query syntax; "..."* matches a prefix.
        query = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
        done: Deferred = Deferred()

        def indexed(more: bool) -> None:
            if more:
                self.index_for_search().addCallbacks(indexed, done.errback)
            else:
                self._read(self._txn_search, peer_id, query, limit).chainDeferred(done)

        self.index_for_search().addCallbacks(indexed, done.errback)
        return done

    def _txn_search(self, cursor: Any, peer_id: str, query: str, limit: int) -> list[Message]:
        columns = ", ".join(f"m.{name}" for name in self._message_columns.split(", "))
        if self.dialect.postgresql:
            # No FTS5 on PostgreSQL yet (a tsvector index is the counterpart): every word as a
            # case-blind prefix of a word of the body, over the caller's own mail only.
            words = [word[1:-2].replace('""', '"') for word in query.split(" ") if word]
            clauses = " AND ".join("m.body ~* ?" for _ in words) or "TRUE"
            patterns = [r"\m" + re.escape(word) for word in words]
            cursor.execute(self._sql(
                f"SELECT {columns} FROM messages m WHERE {clauses} AND (m.from_id = ? OR m.to_id = ?) "
                "ORDER BY m.id DESC LIMIT ?"), (*patterns, peer_id, peer_id, limit))
            return [self._to_message(row) for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT {columns} FROM messages_search JOIN messages m ON m.id = messages_search.rowid "
            "WHERE messages_search MATCH ? AND (m.from_id = ? OR m.to_id = ?) ORDER BY m.id DESC LIMIT ?",
            (query, peer_id, peer_id, limit),
        )
        return [self._to_message(row) for row in cursor.fetchall()]
