"""Storage against other processes: a database locked by another process (a real child holding
a real SQLite lock), and a kill -9 of the process that owns the store (DESIGN 4, issue 6).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from claudepeers.broker.storage import DatabaseError, Store, database, open_pool, prepare

from conftest import ROOT
from storage_support import LockHolder, fingerprint, make_wal, new_message, query
from storage_support import db_path, lock_holder  # noqa: F401 - fixtures


# --- locked by another process ------------------------------------------------------------------


@pytest.fixture
def quick_lock_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database's connections wait 0.3 s for a lock instead of their 5 s (``busy_timeout``):
    for a test of what follows when the wait runs out, not of how long it is."""
    configure = database.configure

    def configure_quickly(connection: Any) -> None:
        configure(connection)
        connection.execute("PRAGMA busy_timeout=300")

    monkeypatch.setattr(database, "configure", configure_quickly)


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


def test_upgrade_of_a_locked_database_fails_clearly_and_keeps_the_old_version(db_path: Path, lock_holder: list,
                                                                           quick_lock_waits: None) -> None:
    """An upgrade that cannot get the write lock within its wait gives DatabaseError naming the
    lock; the file stays v1."""
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
