"""Storage under fire: corrupt, foreign, too-new and read-only files; a full disk.

DESIGN 4 and issue 6: a database the broker cannot use gives a clear DatabaseError and is
never overwritten; a failing write reaches its caller as StoreError and costs no committed
data. (Locks held by another process and a kill -9 of the store's owner: ``test_storage_locks.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList

from claudepeers.broker.storage import DatabaseError, Store, StoreError, database, open_pool, prepare

from engines import is_pg
from storage_support import CHILD_PREPARE, fingerprint, new_message, query
from storage_support import db_path  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent


# --- files that are not (or no longer) ours ------------------------------------------------


def test_garbage_file_is_refused_and_left_byte_identical(db_path: Path) -> None:
    """A file of random bytes gives DatabaseError saying corrupt; its bytes and directory are unchanged."""
    db_path.write_bytes(os.urandom(16384))
    before = fingerprint(db_path)
    with pytest.raises(DatabaseError, match="corrupt or not a database") as raised:
        prepare(db_path)
    assert str(db_path) in str(raised.value)
    assert fingerprint(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_truncated_database_is_refused_and_left_byte_identical(db_path: Path) -> None:
    """A claude-peers database cut short (a bad copy) gives DatabaseError and is not touched."""
    prepare(db_path)
    data = db_path.read_bytes()
    db_path.write_bytes(data[:100] + os.urandom(len(data) // 2))
    before = fingerprint(db_path)
    with pytest.raises(DatabaseError):
        prepare(db_path)
    assert fingerprint(db_path) == before


def test_another_applications_sqlite_file_is_refused_and_not_modified(db_path: Path) -> None:
    """A valid SQLite file without our versions table is refused; not even its journal mode changes."""
    connection = sqlite3.connect(db_path)
    connection.execute("CREATE TABLE notes (body TEXT)")
    connection.execute("INSERT INTO notes VALUES ('precious')")
    connection.commit()
    connection.close()
    before = fingerprint(db_path)
    with pytest.raises(DatabaseError, match="not a claude-peers database"):
        prepare(db_path)
    assert fingerprint(db_path) == before
    assert query(db_path, "PRAGMA journal_mode") == [("delete",)]


def test_empty_file_is_refused_and_left_empty(db_path: Path) -> None:
    """A zero-byte file at the database path is not silently turned into a database."""
    db_path.write_bytes(b"")
    with pytest.raises(DatabaseError, match="not a claude-peers database"):
        prepare(db_path)
    assert db_path.read_bytes() == b""


def test_database_with_an_empty_versions_table_is_refused(db_path: Path) -> None:
    """A database whose versions table is empty cannot be trusted and is refused."""
    database.create(db_path)
    connection = sqlite3.connect(db_path)
    connection.execute("DELETE FROM versions")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseError, match=str(db_path)):
        prepare(db_path)


def test_too_new_database_is_refused_with_both_versions_named(db_path: Path) -> None:
    """A database from a newer claude-peers is refused, naming both versions, and left byte-identical."""
    database.create(db_path)
    connection = sqlite3.connect(db_path)
    connection.execute("UPDATE versions SET version = 99")
    connection.commit()
    connection.close()
    before = fingerprint(db_path)
    with pytest.raises(DatabaseError) as raised:
        prepare(db_path)
    message = str(raised.value)
    assert "v99" in message and f"v{database.latest_version()}" in message and "newer" in message
    assert fingerprint(db_path) == before
    assert not list(db_path.parent.glob("*.bak"))


def test_failed_upgrade_rolls_back_completely_and_keeps_the_old_version(db_path: Path) -> None:
    """An upgrade script failing half-way leaves the file at v1 with nothing of v2 in it, and a backup."""
    database.create(db_path, 1)
    connection = sqlite3.connect(db_path)
    # Takes the name of the index the v2 script creates after its table: the script fails mid-way.
    connection.execute("CREATE INDEX kills_target ON events (at)")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseError, match="upgrading the database"):
        prepare(db_path)
    assert query(db_path, "SELECT version FROM versions") == [(1,)]
    tables = {row[0] for row in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "kills" not in tables
    assert db_path.with_name(db_path.name + ".v1.bak").exists()


# --- read-only files ---------------------------------------------------------------------------

def prepare_without_write_permission(path: Path, guarded: Path | None = None) -> dict[str, Any]:
    """Run prepare(path) as a process for which mode bits apply; ``guarded`` (default: the
    file) is what the test made read-only, reported back as ``writable``.

    As root, mode bits do not stop writes (CAP_DAC_OVERRIDE). Then the check runs in a
    child whose bounding set drops the DAC capabilities (setpriv), so root is held to the
    file's owner bits like any user; if that is impossible here, the test is skipped.
    """
    command = [sys.executable, "-c", CHILD_PREPARE, str(path), str(guarded or path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: mode bits cannot stop root's writes")
        command = [setpriv, "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", *command]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    if completed.returncode != 0:
        pytest.skip(f"could not run prepare() without write permission: {completed.stderr.strip()[-300:]}")
    result = json.loads(completed.stdout)
    if result["writable"] and os.geteuid() == 0:
        pytest.skip("running as root and dropping CAP_DAC_OVERRIDE did not take effect")
    return result


def test_read_only_database_file_is_refused_clearly_and_not_modified(db_path: Path) -> None:
    """A database file the user may read but not write (0400) gives DatabaseError; nothing is changed."""
    prepare(db_path)
    os.chmod(db_path, 0o400)
    before = fingerprint(db_path)
    result = prepare_without_write_permission(db_path)
    assert not result["writable"]
    assert "version" not in result
    assert "not readable and writable" in result["error"] and str(db_path) in result["error"]
    assert fingerprint(db_path) == before


def test_old_read_only_database_is_refused_before_any_upgrade(db_path: Path) -> None:
    """A read-only v1 database is refused without an upgrade attempt or a backup file."""
    database.create(db_path, 1)
    os.chmod(db_path, 0o400)
    before = fingerprint(db_path)
    result = prepare_without_write_permission(db_path)
    assert "error" in result
    assert fingerprint(db_path) == before
    assert not list(db_path.parent.glob("*.bak"))


def test_database_in_a_read_only_directory_is_refused_clearly(tmp_path: Path) -> None:
    """A writable file in a directory where SQLite cannot create its -wal/-shm files gives DatabaseError."""
    directory = tmp_path / "locked-dir"
    directory.mkdir()
    path = directory / "peers.db"
    database.create(path)
    before = fingerprint(path)
    os.chmod(directory, 0o555)
    try:
        result = prepare_without_write_permission(path, guarded=directory)
    finally:
        os.chmod(directory, 0o755)
    assert not result["writable"]
    assert "version" not in result, "prepare() accepted a database whose directory is read-only"
    assert str(path) in result["error"]
    assert "read-only" in result["error"] or "cannot open" in result["error"]
    assert fingerprint(path) == before


def test_database_that_cannot_be_created_gives_a_clear_error(tmp_path: Path) -> None:
    """A missing database in a directory the user cannot write gives DatabaseError naming the path."""
    directory = tmp_path / "no-write"
    directory.mkdir()
    path = directory / "peers.db"
    os.chmod(directory, 0o555)
    try:
        result = prepare_without_write_permission(path, guarded=directory)
    finally:
        os.chmod(directory, 0o755)
    assert not result["writable"]
    assert "cannot create the database" in result["error"] and str(path) in result["error"]
    assert list(directory.iterdir()) == []


# --- a full disk, at the storage boundary -----------------------------------------------------


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """A Store on a freshly prepared database, closed afterwards."""
    prepare(db_path)
    the_store = Store(open_pool(str(db_path)))
    try:
        yield the_store
    finally:
        pytest_twisted.blockon(the_store.close())


def disk_full(cursor: Any) -> None:
    """What sqlite3 raises when the disk fills during a write."""
    raise sqlite3.OperationalError("database or disk is full")


def pg_disk_full(cursor: Any) -> None:
    """What psycopg raises when the server's disk fills during a write."""
    import psycopg

    raise psycopg.errors.DiskFull('could not extend file "base/16384/16390": No space left on device')


@pytest_twisted.inlineCallbacks
def test_disk_full_reaches_the_caller_as_store_error_and_keeps_committed_data(db_target: str) -> Any:
    """A write failing with 'disk is full' gives its caller StoreError; earlier messages are
    intact (on each engine, with its driver's error)."""
    from engines import query as look

    prepare(db_target)
    store = Store(open_pool(db_target))
    try:
        earlier = yield store.add_message(new_message("alice001", "committed before"))
        full = pg_disk_full if is_pg(db_target) else disk_full
        outcome = yield DeferredList([store._write(full)], consumeErrors=True)
        failure = outcome[0][1]
        assert failure.check(StoreError) and ("disk is full" in failure.getErrorMessage()
                                              or "No space left" in failure.getErrorMessage())
        assert look(db_target, "SELECT id, body FROM messages") == [(earlier.id, "committed before")]
        assert (yield store.add_message(new_message("alice001", "after"))).id > earlier.id
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_real_sqlite_full_fails_the_write_and_the_store_recovers(store: Store, db_path: Path) -> Any:
    """With the file capped at its size (SQLITE_FULL for real), a big write fails; after room returns, writes work."""
    earlier = yield store.add_message(new_message("alice001", "small"))
    pages = yield store._pool.runInteraction(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    yield store._pool.runInteraction(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    outcome = yield DeferredList([store.add_message(new_message("alice001", "x" * 200_000))], consumeErrors=True)
    failure = outcome[0][1]
    assert failure.check(StoreError) and "full" in failure.getErrorMessage()
    assert query(db_path, "SELECT id, body FROM messages") == [(earlier.id, "small")]
    assert [m.id for m in (yield store.unread("alice001"))] == [earlier.id]
    yield store._pool.runInteraction(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    later = yield store.add_message(new_message("alice001", "x" * 200_000))
    assert later.id > earlier.id


@pytest_twisted.inlineCallbacks
def test_disk_full_during_a_batch_fails_every_write_of_it_without_hanging(store: Store, db_path: Path) -> Any:
    """When the disk stays full, every write of a batch fails with StoreError and none is left pending."""
    earlier = yield store.add_message(new_message("alice001", "before"))
    pages = yield store._pool.runInteraction(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    yield store._pool.runInteraction(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    writes = [store.add_message(new_message("alice001", "y" * 50_000)) for _ in range(5)]
    outcome = yield DeferredList(writes, consumeErrors=True)
    assert [ok for ok, _ in outcome] == [False] * 5
    assert all(f.check(StoreError) for _, f in outcome)
    assert query(db_path, "SELECT id FROM messages") == [(earlier.id,)]
