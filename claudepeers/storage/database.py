"""Creating and upgrading the SQLite database file (blocking; run once at broker start).

Habits from magic-wormhole's database.py: one ``.sql`` file per schema version plus
upgrade scripts, a version table, a backup before upgrading, and new databases created
atomically (a temporary file, then a rename) so a crash never leaves half a schema.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from importlib import resources
from pathlib import Path


class DatabaseError(Exception):
    """The database cannot be used; the message says which file and why."""


def _schema_text(name: str) -> str:
    return resources.files("claudepeers.storage").joinpath("schema", name).read_text("utf-8")


def latest_version() -> int:
    """The highest ``vN.sql`` shipped with the package."""
    names = [p.name for p in resources.files("claudepeers.storage").joinpath("schema").iterdir()]
    versions = [int(m.group(1)) for n in names if (m := re.fullmatch(r"v(\d+)\.sql", n))]
    return max(versions)


def configure(connection: sqlite3.Connection) -> None:
    """Per-connection settings: WAL for concurrent readers, NORMAL sync, a busy timeout.

    synchronous=NORMAL in WAL mode keeps every commit durable across a process crash
    (kill -9); only a power loss may drop the last transactions.
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


def create(path: Path, version: int | None = None) -> None:
    """Create a fresh database at ``path`` atomically, at ``version`` (default: latest)."""
    version = latest_version() if version is None else version
    temporary = path.with_name(path.name + ".creating")
    for leftover in (temporary, Path(str(temporary) + "-wal"), Path(str(temporary) + "-shm")):
        if leftover.exists():
            leftover.unlink()
    connection = sqlite3.connect(temporary)
    try:
        connection.executescript(_schema_text(f"v{version}.sql"))
        connection.execute("INSERT INTO versions (version) VALUES (?)", (version,))
        connection.commit()
    finally:
        connection.close()
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def read_version(connection: sqlite3.Connection) -> int:
    """The schema version stored in the database."""
    row = connection.execute("SELECT version FROM versions").fetchone()
    if row is None:
        raise sqlite3.DatabaseError("the versions table is empty")
    return int(row[0])


def upgrade(path: Path, connection: sqlite3.Connection, target: int) -> int:
    """Apply ``upgrade_to_vN.sql`` scripts in order up to ``target``; back up first."""
    current = read_version(connection)
    if current == target:
        return current
    backup = path.with_name(f"{path.name}.v{current}.bak")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy2(path, backup)
    for version in range(current + 1, target + 1):
        script = _schema_text(f"upgrade_to_v{version}.sql")
        # executescript commits first; wrap each upgrade in its own transaction.
        connection.executescript(f"BEGIN;\n{script}\nUPDATE versions SET version = {version};\nCOMMIT;")
    return target


def prepare(path: Path) -> int:
    """Make ``path`` a usable database at the latest version; return that version.

    Raises DatabaseError with a clear message for a read-only, locked, corrupt or too-new
    file; it never overwrites or deletes an existing database.
    """
    path = Path(path)
    target = latest_version()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            create(path, target)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot create the database {path}: {exc}") from None
        return target
    if not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseError(f"the database {path} is not readable and writable by this user")
    try:
        connection = sqlite3.connect(path, timeout=2.0)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open the database {path}: {exc}") from None
    try:
        try:
            # Read before configuring: switching to WAL writes to the file, and a file that
            # is not ours (another application's, empty, too new) must be left untouched.
            version = read_version(connection)
            if version > target:
                raise DatabaseError(
                    f"the database {path} has schema v{version}, newer than this claude-peers (v{target})"
                )
            configure(connection)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise DatabaseError(f"the database {path} is locked by another process") from None
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise DatabaseError(f"the database {path} is read-only") from None
            raise DatabaseError(f"the database {path} is not a claude-peers database: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"the database {path} is corrupt or not a database: {exc}") from None
        try:
            return upgrade(path, connection, target)
        except sqlite3.Error as exc:
            raise DatabaseError(f"upgrading the database {path} failed: {exc}") from None
    finally:
        connection.close()


def dump_schema(path: Path) -> list[tuple[str, str]]:
    """The schema of a database as sorted (name, sql) pairs; for the upgraded == fresh test."""
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    finally:
        connection.close()
    # ALTER TABLE splices its text into the stored CREATE statement; compare the
    # statements with white space around punctuation removed.
    return [(name, re.sub(r"\s*([,()])\s*", r"\1", re.sub(r"\s+", " ", sql)).strip()) for name, sql in rows]
