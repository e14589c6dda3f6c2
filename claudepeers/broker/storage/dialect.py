"""What differs between the two engines the store runs on: SQLite (the embedded default) and
PostgreSQL (several hosts sharing one database, DESIGN 7). Everything else is one set of SQL.

The schema has one source: the SQLite ``schema/vN.sql`` and ``schema/upgrade_to_vN.sql`` files.
PostgreSQL's DDL is derived from them by :func:`translate` (tested on every shipped file):

- ``INTEGER PRIMARY KEY AUTOINCREMENT`` -> ``BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY``
  (ids only ever come from the database: write ``INSERT ... RETURNING id``, never
  ``cursor.lastrowid``, which psycopg does not fill);
- ``INTEGER`` -> ``BIGINT`` (SQLite's integers are 64-bit), ``REAL`` -> ``DOUBLE PRECISION``,
  ``BLOB`` -> ``BYTEA``;
- ``VARCHAR(n)`` -> ``TEXT``: SQLite never enforces the length, so both engines accept the same
  values (the broker bounds its inputs itself) and a too-long value cannot be an error on one
  engine only.

What cannot be translated word for word is written for each engine in the same file, between
marker lines (alone on their line):

    --@ sqlite
    CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', content_rowid='id');
    --@ postgresql
    CREATE INDEX messages_fts ON messages USING gin (to_tsvector('simple', body));
    --@ both

Lines under ``--@ postgresql`` are used as written (no translation). A SQLite-only construct
left outside a ``--@ sqlite`` block (PRAGMA, AUTOINCREMENT elsewhere, a virtual table, a
trigger, ``INSERT OR ...``, ``WITHOUT ROWID``) makes :func:`translate` raise, so a new schema
version cannot silently break PostgreSQL. Adding a version for both engines is: write
``vN.sql`` and ``upgrade_to_vN.sql`` as today, mark the engine-specific statements, run
``tests/test_storage_pg_schema.py``.

Statements: the store writes ``?`` placeholders; :meth:`Dialect.sql` turns them into psycopg's
``%s`` (and doubles a literal ``%``). Portable habits: ``COALESCE`` (not ``IFNULL``),
``ON CONFLICT (...) DO UPDATE SET c = excluded.c`` for upserts, ``RETURNING`` for ids,
``CAST(x AS ...)`` rather than SQLite's loose typing; a Python ``bool`` is stored as 1/0 on
both (psycopg is told so in ``pgpool.configure``). Where SQL differs, the store asks its
dialect (:meth:`Dialect.octets`, :meth:`Dialect.used_bytes`, :meth:`Dialect.insert_arrays`);
on PostgreSQL it also batches acknowledgements into one statement (store.py). PostgreSQL text
cannot hold U+0000: the broker refuses it on both engines. Full-text search has no common
form: SQLite's FTS5 table and PostgreSQL's ``to_tsvector`` index go in engine blocks, and the
query that uses them asks the dialect (add a method here next to ``octets``).

Guards that only make sense for a file (the WAL check at start, the file's identity after every
commit, the file modes, the database bound measured from the file's pages, the backup before
an upgrade) are skipped for PostgreSQL: there is no file of ours, the server's WAL and
durability are its own, and an upgrade runs in one transaction that rolls back whole. The
per-peer quotas of unread mail hold on both engines. For status, PostgreSQL's size is
``pg_database_size`` (shown, not enforced: deleting rows does not shrink it until VACUUM).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

#: Marker lines of engine-specific parts of a schema file.
_MARKER = re.compile(r"^\s*--@\s*(sqlite|postgresql|both)\s*$")
_TYPES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I), "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\bVARCHAR\s*\(\s*\d+\s*\)", re.I), "TEXT"),
]
#: SQLite-only constructs that must sit in a ``--@ sqlite`` block.
_SQLITE_ONLY = re.compile(
    r"\b(PRAGMA|AUTOINCREMENT|VIRTUAL\s+TABLE|CREATE\s+TRIGGER|INSERT\s+OR|REPLACE\s+INTO|WITHOUT\s+ROWID|fts5)\b",
    re.I,
)


class SchemaError(ValueError):
    """A schema file cannot be used for an engine (says which file, line and why)."""


def engine_lines(text: str, engine: str, name: str = "schema") -> list[tuple[int, str, bool]]:
    """The lines of ``text`` meant for ``engine``: (line number, line, written for it alone)."""
    mode = "both"
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        marker = _MARKER.match(line)
        if marker:
            mode = marker.group(1)
            continue
        if mode == "both" or mode == engine:
            lines.append((number, line, mode == engine))
    if mode != "both":
        raise SchemaError(f"{name}: a '--@ {mode}' block is not closed by '--@ both'")
    return lines


def sqlite_script(text: str, name: str = "schema") -> str:
    """The script for SQLite: the shared lines and the ``--@ sqlite`` ones."""
    return "\n".join(line for _, line, _ in engine_lines(text, "sqlite", name)) + "\n"


def translate(text: str, name: str = "schema") -> str:
    """The script for PostgreSQL: shared lines translated, ``--@ postgresql`` lines as written."""
    out = []
    for number, line, own in engine_lines(text, "postgresql", name):
        if not own:
            code = line.split("--", 1)[0]
            found = _SQLITE_ONLY.search(_TYPES[0][0].sub("", code))
            if found:
                raise SchemaError(f"{name} line {number}: {found.group(0)!r} is SQLite only; put it in a "
                                  "'--@ sqlite' block and write the PostgreSQL form under '--@ postgresql'")
            for pattern, replacement in _TYPES:
                line = pattern.sub(replacement, line)
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Dialect:
    """One engine's words for what the store's SQL cannot say the same way on both."""

    #: "sqlite" or "postgresql".
    name: str
    #: The DB-API module adbapi's pool loads.
    dbapi: str

    @property
    def postgresql(self) -> bool:
        """True for PostgreSQL."""
        return self.name == "postgresql"

    def sql(self, statement: str) -> str:
        """``statement`` with ``?`` placeholders in this engine's parameter style."""
        if not self.postgresql:
            return statement
        return statement.replace("%", "%%").replace("?", "%s")

    def octets(self, expression: str) -> str:
        """SQL for the size in bytes of a TEXT ``expression`` (SQLite 3.40 has no octet_length)."""
        return f"octet_length({expression})" if self.postgresql else f"length(CAST({expression} AS BLOB))"

    def script(self, text: str, name: str = "schema") -> str:
        """A schema file's text for this engine."""
        return translate(text, name) if self.postgresql else sqlite_script(text, name)

    def insert_arrays(self, table: str, columns: list[str], types: dict[str, str], suffix: str) -> str | None:
        """PostgreSQL: an INSERT of any number of rows from one array per column (``types``
        names the non-text ones), in array order; None for SQLite (multi-row VALUES instead).

        A long multi-row VALUES statement costs psycopg a parse of its text in Python on every
        execution (it caches only short queries); ten arrays keep it short and prepared.
        """
        if not self.postgresql:
            return None
        arrays = ", ".join(f"%b::{types.get(column, 'text')}[]" for column in columns)
        names = ", ".join(columns)
        return (f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays}) WITH ORDINALITY "
                f"AS row ({names}, position) ORDER BY position {suffix}")

    def used_bytes(self, cursor: Any) -> int:
        """Bytes the database holds: SQLite's pages less its free ones; PostgreSQL's database size."""
        if self.postgresql:
            return int(cursor.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        values = [cursor.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")]
        return (values[0] - values[1]) * values[2]

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's exceptions (a failed statement, a lost connection)."""
        if not self.postgresql:
            return (sqlite3.Error,)
        import psycopg
        from twisted.enterprise.adbapi import ConnectionLost

        return (psycopg.Error, ConnectionLost)


SQLITE = Dialect("sqlite", "sqlite3")
POSTGRESQL = Dialect("postgresql", "psycopg")


def for_pool(pool: Any) -> Dialect:
    """The dialect of an adbapi pool (by its DB-API module; stand-in pools are SQLite)."""
    return POSTGRESQL if getattr(pool, "dbapiName", "sqlite3") == "psycopg" else SQLITE
