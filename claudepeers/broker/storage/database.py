"""Creating and upgrading the SQLite database file (blocking; run once at broker start).

Habits from magic-wormhole's database.py: one ``.sql`` file per schema version plus
upgrade scripts, a version table, a backup before upgrading, and new databases created
atomically (a temporary file, then a rename) so a crash never leaves half a schema.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from twisted.logger import Logger

from claudepeers.broker.storage import walcheck
from claudepeers.broker.storage.schemafiles import DatabaseError, _schema_text, latest_version  # noqa: F401 - re-exported
from claudepeers.broker.storage.dialect import SQLITE
from claudepeers.common import dsn as dsns

log = Logger()


def configure(connection: sqlite3.Connection) -> None:
    """Per-connection settings: WAL for concurrent readers, NORMAL sync, a busy timeout.

    synchronous=NORMAL in WAL mode keeps every commit durable across a process crash
    (kill -9); only a power loss may drop the last transactions.
    """
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")


@contextmanager
def private_files() -> Iterator[None]:
    """Create files 0600 (umask 0177) for the block: never briefly readable by others."""
    old = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(old)


def beside(path: Path) -> list[Path]:
    """The database and every file SQLite or claude-peers keeps beside it."""
    path = Path(path)
    names = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    names += sorted(path.parent.glob(f"{glob.escape(path.name)}.v*.bak"))
    names += sorted(path.parent.glob(f"{glob.escape(path.name)}-wal.damaged-*"))
    names += sorted(path.parent.glob(f"{glob.escape(path.name)}.rescued-*"))
    return names


def secure_modes(path: Path) -> list[str]:
    """Take group and other bits off the database and its companions; what was changed.

    Only the owner's bits are kept (a 0644 file becomes 0600, a read-only 0444 one 0400).
    """
    changed = []
    for candidate in beside(path):
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            os.chmod(candidate, mode & 0o700)
            changed.append(f"{candidate} was mode {mode:04o}; now {mode & 0o700:04o}")
    return changed


def create(path: Path, version: int | None = None) -> None:
    """Create a fresh database at ``path`` atomically, at ``version`` (default: latest)."""
    version = latest_version() if version is None else version
    temporary = path.with_name(path.name + ".creating")
    for leftover in (temporary, Path(str(temporary) + "-wal"), Path(str(temporary) + "-shm")):
        if leftover.exists():
            leftover.unlink()
    with private_files():
        connection = sqlite3.connect(temporary)
    try:
        connection.executescript(SQLITE.script(_schema_text(f"v{version}.sql"), f"v{version}.sql"))
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
    with private_files():
        shutil.copy2(path, backup)
    os.chmod(backup, 0o600)
    for version in range(current + 1, target + 1):
        script = SQLITE.script(_schema_text(f"upgrade_to_v{version}.sql"), f"upgrade_to_v{version}.sql")
        # executescript commits first; wrap each upgrade in its own transaction.
        connection.executescript(f"BEGIN;\n{script}\nUPDATE versions SET version = {version};\nCOMMIT;")
    return target


def prepare(path: Path | str, problems: list[str] | None = None) -> int:
    """Make ``path`` a usable database at the latest version; return that version.

    ``path`` may be a PostgreSQL URL or DSN instead (see pgdatabase.prepare).

    Raises DatabaseError with a clear message for a read-only, locked, corrupt or too-new
    file; it never overwrites or deletes an existing database. Files beside it that others
    could read are made 0600; a write-ahead log whose recovery will discard committed
    transactions is copied aside and reported (logged, and appended to ``problems``).
    """
    if dsns.is_postgres(path):
        from claudepeers.broker.storage import pgdatabase

        return pgdatabase.prepare(str(path), problems)
    path = Path(path)
    target = latest_version()
    for line in secure_modes(path):
        log.warn("database file mode fixed: {line}", line=line)
    damage = _check_wal(path)
    if damage and problems is not None:
        problems.append(damage)
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
            if damage:
                _integrity_check(connection, path, problems)
            with private_files():
                return upgrade(path, connection, target)
        except sqlite3.Error as exc:
            raise DatabaseError(f"upgrading the database {path} failed: {exc}") from None
    finally:
        connection.close()


def _check_wal(path: Path) -> str:
    """Before SQLite recovers it: does the WAL hold committed frames recovery will drop?"""
    wal = Path(f"{path}-wal")
    try:
        report = walcheck.inspect_wal(wal)
    except OSError as exc:
        return f"the write-ahead log {wal} cannot be read: {exc.strerror}"
    if report is None or not report.damaged:
        return ""
    try:
        copy = f"a copy of it is kept at {walcheck.keep_copy(wal)}"
    except OSError as exc:
        copy = f"no copy could be kept ({exc.strerror})"
    text = f"{wal} is damaged: {report.describe()}; {copy}"
    log.critical("database recovery loses messages: {text}", text=text)
    return text


def _integrity_check(connection: sqlite3.Connection, path: Path, problems: list[str] | None) -> None:
    rows = [row[0] for row in connection.execute("PRAGMA integrity_check").fetchall()]
    if rows == ["ok"]:
        log.warn("integrity check of {path} after the damaged WAL: ok", path=str(path))
        return
    text = f"the integrity check of {path} failed: {'; '.join(rows[:5])}"
    log.critical("{text}", text=text)
    if problems is not None:
        problems.append(text)
