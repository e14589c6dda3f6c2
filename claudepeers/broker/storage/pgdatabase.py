"""Creating and upgrading the schema in a PostgreSQL database (blocking; run once at broker start).

The counterpart of database.py for ``CLAUDE_PEERS_DB=postgresql://...``: the same versions,
from the same ``.sql`` files translated by :mod:`.dialect`. PostgreSQL's DDL is transactional,
so creating a schema, or upgrading it through several versions, is one transaction: a failure
leaves the database as it was (no backup file needed), and brokers of several hosts starting
at once take turns through an advisory lock (only one creates; the others find it made).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger

from claudepeers.common import dsn as dsns

from claudepeers.broker.storage.schemafiles import DatabaseError, _schema_text, latest_version
from claudepeers.broker.storage.dialect import POSTGRESQL

log = Logger()

#: pg_advisory_xact_lock(classid, objid) taken while creating or upgrading the schema
#: ("cp" and 1). Other advisory locks of claude-peers use other object ids.
SCHEMA_LOCK = (0x6370, 1)
#: Our tables: a database holding one of them but no ``versions`` table is not ours to change.
TABLES = ("versions", "peers", "messages", "events", "kills")


def connect(dsn: str, **options: Any) -> Any:
    """A psycopg connection; DatabaseError (password left out) when it cannot be made."""
    try:
        import psycopg
    except ImportError:
        raise DatabaseError(
            "CLAUDE_PEERS_DB names a PostgreSQL database, but psycopg is not installed: "
            "pip install 'claude-peers[postgres]'"
        ) from None
    try:
        return psycopg.connect(dsn, **{**dsns.connect_options(dsn), **options})
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database {dsns.display(dsn)}: {dsns.scrub(str(exc), dsn)}") from None


def _version(cursor: Any) -> int | None:
    """The stored version; None for a database without our tables."""
    if cursor.execute("SELECT to_regclass('versions')").fetchone()[0] is None:
        present = [t for t in TABLES if cursor.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None]
        if present:
            raise DatabaseError(f"it has a table {present[0]} but no versions table: not a claude-peers database")
        return None
    row = cursor.execute("SELECT version FROM versions").fetchone()
    if row is None:
        raise DatabaseError("its versions table is empty: not a claude-peers database")
    return int(row[0])


def create_schema(cursor: Any, version: int) -> None:
    """Create the schema of ``version`` (default: latest) in the current transaction."""
    cursor.execute(POSTGRESQL.script(_schema_text(f"v{version}.sql"), f"v{version}.sql"))
    cursor.execute("INSERT INTO versions (version) VALUES (%s)", (version,))


def upgrade_schema(cursor: Any, current: int, target: int) -> None:
    """Apply the upgrade scripts after ``current`` up to ``target`` in the current transaction."""
    for version in range(current + 1, target + 1):
        name = f"upgrade_to_v{version}.sql"
        cursor.execute(POSTGRESQL.script(_schema_text(name), name))
        cursor.execute("UPDATE versions SET version = %s", (version,))


def prepare(dsn: str, problems: list[str] | None = None, version: int | None = None) -> int:
    """Make the database ``dsn`` names hold the schema at ``version`` (default latest); return it.

    Raises DatabaseError (naming the database without its password) when the server cannot be
    reached, the database is another application's or newer than this claude-peers, or the
    upgrade fails; then nothing was changed. ``problems`` is for parity with SQLite's prepare.
    """
    target = latest_version() if version is None else version
    where = dsns.display(dsn)
    connection = connect(dsn)
    try:
        import psycopg

        try:
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
                try:
                    current = _version(cursor)
                except DatabaseError as exc:
                    raise DatabaseError(f"the database {where}: {exc}") from None
                if current is None:
                    log.info("creating the claude-peers schema v{v} in {where}", v=target, where=where)
                    create_schema(cursor, target)
                    return target
                if current > target:
                    raise DatabaseError(f"the database {where} has schema v{current}, newer than this claude-peers (v{target})")
                if current < target:
                    log.info("upgrading {where} from schema v{old} to v{new}", where=where, old=current, new=target)
                    upgrade_schema(cursor, current, target)
                return target
        except psycopg.Error as exc:
            raise DatabaseError(f"preparing the database {where} failed: {dsns.scrub(str(exc), dsn)}") from None
    finally:
        connection.close()


def dump_schema(dsn: str) -> list[tuple[str, str, str]]:
    """The schema as sorted (kind, name, definition) rows; for the upgraded == fresh test.

    Columns are listed in their order without their attribute numbers (a dropped column
    leaves a gap in those); indexes, constraints, triggers and functions by their definitions,
    without the schema's name (two schemas of one database compare equal).
    """
    connection = connect(dsn)
    try:
        schema = connection.execute("SELECT current_schema()").fetchone()[0]
        rows: list[tuple[str, str, str]] = []
        columns = connection.execute(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, ''), is_identity, "
            "coalesce(identity_generation, '') FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
        order: dict[str, int] = {}
        for table, column, *details in columns:
            order[table] = order.get(table, 0) + 1
            rows.append(("column", f"{table}.{order[table]}", " ".join([column, *map(str, details)])))
        queries = {
            "index": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
            "constraint": "SELECT c.conrelid::regclass::text || '.' || c.conname, pg_get_constraintdef(c.oid) "
                          "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                          "WHERE n.nspname = current_schema()",
            "trigger": "SELECT t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid) "
                       "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND NOT t.tgisinternal",
            "function": "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n "
                        "ON n.oid = p.pronamespace WHERE n.nspname = current_schema()",
        }
        for kind, query in queries.items():
            for name, definition in connection.execute(query):
                definition = re.sub(r"\s+", " ", definition).replace(f'"{schema}".', "").replace(f"{schema}.", "")
                rows.append((kind, name, definition))
        return sorted(rows)
    finally:
        connection.close()
