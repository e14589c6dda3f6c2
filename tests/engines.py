"""Looking at a test's database the way another process would, on either engine.

A target is a SQLite path or a PostgreSQL DSN (the ``db_target`` fixture gives one of each in
turn). Statements are written with ``?`` placeholders, as in the store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from claudepeers.broker.storage import database
from claudepeers.broker.storage.dialect import POSTGRESQL
from claudepeers.common import dsn as dsns


def is_pg(target: str | Path) -> bool:
    """True for a PostgreSQL DSN."""
    return dsns.is_postgres(str(target)) if isinstance(target, str) else False


def _connect(target: str | Path) -> Any:
    if is_pg(target):
        import psycopg

        return psycopg.connect(str(target))
    return sqlite3.connect(target)


def query(target: str | Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run ``sql`` on a separate connection (committed); its rows."""
    connection = _connect(target)
    try:
        cursor = connection.execute(POSTGRESQL.sql(sql) if is_pg(target) else sql, params)
        rows = cursor.fetchall() if cursor.description else []
        connection.commit()
        return [tuple(row) for row in rows]
    finally:
        connection.close()


def tables(target: str | Path) -> set[str]:
    """The names of the database's tables (the DSN's schema on PostgreSQL)."""
    if is_pg(target):
        return {row[0] for row in query(target, "SELECT table_name FROM information_schema.tables "
                                                "WHERE table_schema = current_schema()")}
    return {row[0] for row in query(target, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def create(target: str | Path, version: int | None = None) -> None:
    """A fresh database (schema) at ``version`` (default: the latest)."""
    if is_pg(target):
        from claudepeers.broker.storage import pgdatabase

        pgdatabase.prepare(str(target), version=version)
    else:
        database.create(Path(target), version)


def dump_schema(target: str | Path) -> list[Any]:
    """The schema, comparable between an upgraded and a fresh database of the same engine."""
    if is_pg(target):
        from claudepeers.broker.storage import pgdatabase

        return pgdatabase.dump_schema(str(target))
    return database.dump_schema(Path(target))
