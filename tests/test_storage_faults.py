"""Storage under fire: corrupt, foreign, too-new, read-only and locked files; a full disk.

DESIGN 4 and issue 6: a database the broker cannot use gives a clear DatabaseError and is
never overwritten; a failing write reaches its caller as StoreError and costs no committed
data. "Another process" is a real child process holding a real SQLite lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList

from claudepeers.broker.records import NewMessage
from claudepeers.broker.storage import DatabaseError, Store, StoreError, database, open_pool, prepare

from engines import is_pg

ROOT = Path(__file__).resolve().parent.parent


def fingerprint(path: Path) -> str:
    """A digest of the file's bytes, to prove it was left untouched."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_message(to_id: str, body: str = "hello") -> NewMessage:
    """A message ready to store."""
    return NewMessage(from_id="sender01", from_name="sender", from_summary="", from_cwd="/repo",
                      from_client="codex", verified=True, to_id=to_id, body=body, sent_at=1000.0)


def query(path: Path, sql: str) -> list[tuple]:
    """Run ``sql`` on a separate connection."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's database lives (not yet created)."""
    return tmp_path / "peers.db"


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

CHILD_PREPARE = textwrap.dedent(
    """
    import json, os, sys
    from claudepeers.broker.storage import DatabaseError, prepare
    path, guarded = sys.argv[1], sys.argv[2]
    result = {"writable": os.access(guarded, os.W_OK)}
    try:
        result["version"] = prepare(path)
    except DatabaseError as exc:
        result["error"] = str(exc)
    print(json.dumps(result))
    """
)


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


# --- locked by another process ------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    connection.execute("ROLLBACK")
    connection.close()
    """
)


class LockHolder:
    """Another process holding ``BEGIN EXCLUSIVE`` on a database until released."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "locked", f"lock holder did not start: {line!r}"

    def release(self) -> None:
        """Roll back and let the child exit."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("release\n")
            self.process.stdin.flush()
            self.process.wait(timeout=10)


@pytest.fixture
def lock_holder() -> Iterator[list[LockHolder]]:
    """Start lock holders with ``holders.append(LockHolder(path))``; all are released after the test."""
    holders: list[LockHolder] = []
    try:
        yield holders
    finally:
        for holder in holders:
            holder.release()
            if holder.process.poll() is None:
                holder.process.kill()


def make_wal(path: Path) -> None:
    """Switch a database to WAL, as the broker's connection does."""
    connection = sqlite3.connect(path)
    database.configure(connection)
    connection.close()


def test_locked_database_gives_a_clear_error_after_a_bounded_wait(db_path: Path, lock_holder: list) -> None:
    """While another process holds an exclusive lock, prepare() waits about 2 s, then says it is locked."""
    database.create(db_path)  # a new file is in rollback-journal mode: the lock blocks readers too
    before = fingerprint(db_path)
    lock_holder.append(LockHolder(db_path))
    started = time.monotonic()
    with pytest.raises(DatabaseError, match="locked by another process"):
        prepare(db_path)
    assert time.monotonic() - started < 8
    lock_holder[0].release()
    assert fingerprint(db_path) == before
    assert prepare(db_path) == database.latest_version()


def test_wal_database_at_latest_version_is_usable_while_another_process_writes(db_path: Path,
                                                                               lock_holder: list) -> None:
    """In WAL mode a writer does not block readers: prepare() of a current database succeeds at once."""
    prepare(db_path)
    make_wal(db_path)
    lock_holder.append(LockHolder(db_path))
    started = time.monotonic()
    assert prepare(db_path) == database.latest_version()
    assert time.monotonic() - started < 1.5


def test_upgrade_of_a_locked_database_fails_clearly_and_keeps_the_old_version(db_path: Path,
                                                                           lock_holder: list) -> None:
    """An upgrade that cannot get the write lock gives DatabaseError naming the lock; the file stays v1."""
    database.create(db_path, 1)
    make_wal(db_path)
    lock_holder.append(LockHolder(db_path))
    with pytest.raises(DatabaseError, match="locked") as raised:
        prepare(db_path)
    assert str(db_path) in str(raised.value)
    lock_holder[0].release()
    assert query(db_path, "SELECT version FROM versions") == [(1,)]
    assert prepare(db_path) == database.latest_version()


@pytest_twisted.inlineCallbacks
def test_store_write_waits_for_another_process_to_release_its_lock(db_path: Path, lock_holder: list) -> Any:
    """A write issued while another process holds the write lock commits after the lock is released."""
    prepare(db_path)
    make_wal(db_path)
    store = Store(open_pool(str(db_path)))
    try:
        holder = LockHolder(db_path)
        lock_holder.append(holder)
        order: list[str] = []
        written = store.add_message(new_message("alice001", "waited")).addCallback(
            lambda m: order.append("committed") or m)
        released: Deferred = Deferred()

        def release() -> None:
            order.append("released")
            holder.release()
            released.callback(None)

        reactor.callLater(0.3, release)
        message = yield written
        yield released
        assert order == ["released", "committed"]
        assert query(db_path, "SELECT body FROM messages") == [("waited",)]
        assert message.body == "waited"
    finally:
        yield store.close()


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


# --- a crash (kill -9) of the process that owns the store ----------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from twisted.internet import reactor
    from claudepeers.broker.records import NewMessage
    from claudepeers.broker.storage import Store, open_pool, prepare

    path = sys.argv[1]
    prepare(path)
    store = Store(open_pool(path))

    def report(message):
        sys.stdout.write(f"{message.id}\\n")
        sys.stdout.flush()

    def write_forever(_=None):
        for n in range(50):
            store.add_message(NewMessage("s", "s", "", "/", "codex", True, "alice001", f"b{n}", 1.0)).addCallback(report)
        store.add_message(NewMessage("s", "s", "", "/", "codex", True, "alice001", "tail", 1.0)).addCallback(write_forever)

    reactor.callWhenRunning(write_forever)
    reactor.run()
    """
)


def test_every_write_reported_committed_survives_kill_9_of_its_process(db_target: str) -> None:
    """A process writing in a loop is SIGKILLed; every message whose Deferred had fired is in the
    file (in the PostgreSQL database)."""
    from engines import query as look

    db_path = db_target
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)
    assert process.stdout is not None
    acknowledged: list[int] = []
    try:
        while len(acknowledged) < 2_000:
            line = process.stdout.readline()
            assert line, f"the writer exited early with status {process.poll()}"
            acknowledged.append(int(line))
    finally:
        process.kill()
        process.wait(timeout=10)
    stored = {row[0] for row in look(db_path, "SELECT id FROM messages")}
    assert set(acknowledged) <= stored
    assert prepare(db_path) == database.latest_version()
