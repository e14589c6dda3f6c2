"""Storage: schema creation and upgrades (database.py) and the group-committing Store.

The Store runs on the real reactor (adbapi works in a thread); every check of what is
stored goes through a separate connection, the way another process would see it. The store's
tests and the schema's (creation, upgrades, "upgraded equals fresh") run on both engines, SQLite
and PostgreSQL (the ``db_target`` fixture); the file's own (modes, temporary file, backup) on
SQLite. The inbox, peers, events and retention: ``test_storage_inbox.py``; faults (corrupt,
read-only, locked, disk full): ``test_storage_faults.py`` and ``test_storage_locks.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList, gatherResults

from claudepeers.broker.storage import Store, StoreError, database, open_pool, prepare
from claudepeers.broker.storage.dialect import POSTGRESQL, SQLITE

from engines import create, dump_schema, is_pg, query, tables
from storage_support import new_message
from storage_support import db_path, store, target  # noqa: F401 - fixtures


# --- database: creation and upgrades -------------------------------------------------------


def test_fresh_database_is_created_at_the_latest_version(target: str) -> None:
    """prepare() on a missing file (an empty PostgreSQL schema) creates the latest schema version with every table."""
    assert prepare(target) == database.latest_version()
    assert query(target, "SELECT version FROM versions") == [(database.latest_version(),)]
    assert {"versions", "peers", "messages", "events", "kills"} <= tables(target)


def test_fresh_database_file_is_private(db_path: Path) -> None:
    """A created database is mode 0600: other users cannot read anyone's mail."""
    prepare(db_path)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_prepare_creates_missing_parent_directories(tmp_path: Path) -> None:
    """prepare() makes the directories leading to the database file."""
    path = tmp_path / "a" / "b" / "peers.db"
    prepare(path)
    assert query(path, "SELECT version FROM versions") == [(database.latest_version(),)]


def test_creation_leaves_no_temporary_file_and_replaces_a_crashed_one(db_path: Path) -> None:
    """create() writes via a temporary file and a rename; a leftover from a crash is replaced."""
    leftover = db_path.with_name(db_path.name + ".creating")
    leftover.write_bytes(b"half a schema from a crash")
    prepare(db_path)
    assert not leftover.exists()
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


def test_prepare_on_a_current_database_changes_nothing_and_makes_no_backup(target: str, tmp_path: Path) -> None:
    """A database already at the latest version is used as is: same data, no backup file."""
    prepare(target)
    query(target, "INSERT INTO events (at, kind, peer_id, detail) VALUES (1, 'register', 'p', '')")
    assert prepare(target) == database.latest_version()
    assert query(target, "SELECT kind FROM events") == [("register",)]
    assert not list(tmp_path.glob("*.bak"))


@pytest.fixture
def second_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another database of the same engine (a second file, a second PostgreSQL schema)."""
    if engine == "sqlite":
        return str(tmp_path / "fresh.db")
    server = request.getfixturevalue("pg_server")
    schema = server.fresh_schema()
    request.addfinalizer(lambda: server.drop_schema(schema))
    return server.schema_dsn(schema)


@pytest.mark.parametrize("start", range(1, database.latest_version()))
def test_upgraded_database_equals_a_fresh_one(target: str, second_target: str, start: int) -> None:
    """A database created at any older version and upgraded by prepare() has exactly the
    schema of a freshly created one, on each engine."""
    create(target, start)
    assert query(target, "SELECT version FROM versions") == [(start,)]
    assert prepare(target) == database.latest_version()
    create(second_target)
    assert dump_schema(target) == dump_schema(second_target)
    assert query(target, "SELECT version FROM versions") == query(second_target, "SELECT version FROM versions")


def test_upgrade_keeps_the_data_and_leaves_a_backup_of_the_old_version(target: str) -> None:
    """Upgrading keeps every row; SQLite also leaves ``<name>.v1.bak``, a usable copy of the v1
    database (PostgreSQL's upgrade is one transaction: it commits whole or not at all)."""
    create(target, 1)
    query(target, "INSERT INTO messages (from_id, from_name, from_summary, from_cwd, from_client, verified, to_id, "
                  "body, sent_at) VALUES ('a', 'a', '', '/', 'codex', 1, 'b', 'kept across upgrades', 5.0)")
    prepare(target)
    if not is_pg(target):
        backup = Path(target + ".v1.bak")
        assert backup.exists()
        assert query(backup, "SELECT version FROM versions") == [(1,)]
        assert query(backup, "SELECT body FROM messages") == [("kept across upgrades",)]
    assert query(target, "SELECT body FROM messages") == [("kept across upgrades",)]
    assert query(target, "SELECT COUNT(*) FROM kills") == [(0,)]


def test_every_shipped_version_has_an_upgrade_script() -> None:
    """For each version above 1 there is an upgrade_to_vN.sql, so every old file can be upgraded."""
    for version in range(2, database.latest_version() + 1):
        assert database._schema_text(f"upgrade_to_v{version}.sql").strip()


# --- the store: writes, durability, group commit ---------------------------------------------


@pytest_twisted.inlineCallbacks
def test_add_message_fires_only_after_commit(store: Store, target: str) -> Any:
    """When add_message fires, another connection already sees the row (committed, not pending)."""
    seen: list[Any] = []

    def look(message: Any) -> Any:
        seen.append(query(target, "SELECT id, to_id, body FROM messages"))
        return message

    message = yield store.add_message(new_message("bob00001", "durable")).addCallback(look)
    assert seen == [[(message.id, "bob00001", "durable")]]
    assert message.body == "durable" and message.acked_at is None


@pytest_twisted.inlineCallbacks
def test_writes_issued_together_share_few_transactions(store: Store, target: str) -> Any:
    """500 add_message calls at once all fire with distinct increasing ids in far fewer than 500 commits."""
    before = store.batches
    calls = [store.add_message(new_message("bob00001", f"m{i}")) for i in range(500)]
    messages = yield gatherResults(calls)
    ids = [m.id for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 500
    assert [m.body for m in messages] == [f"m{i}" for i in range(500)]
    assert store.batches - before <= 5
    rows = query(target, "SELECT id, body FROM messages ORDER BY id")
    assert rows == [(m.id, m.body) for m in messages]


@pytest_twisted.inlineCallbacks
def test_keyed_and_plain_messages_in_one_commit_keep_their_order_and_keys(store: Store, target: str) -> Any:
    """Mixed in one group commit: new messages get increasing ids in call order; a key
    already stored (in an earlier commit, or earlier in the same one) returns the first
    message and stores nothing."""
    earlier, fresh = yield store.add_message_once(new_message("bob00001", "earlier"), "k-old")
    assert fresh
    calls = [
        store.add_message(new_message("bob00001", "plain 1")),
        store.add_message_once(new_message("bob00001", "keyed"), "k-new"),
        store.add_message_once(new_message("bob00001", "repeat of earlier"), "k-old"),
        store.add_message_once(new_message("bob00001", "repeat in this commit"), "k-new"),
        store.add_message_once(new_message("bob00001", "same key, other sender", from_id="other001"), "k-new"),
        store.add_message(new_message("bob00001", "plain 2")),
    ]
    plain1, (keyed, keyed_new), (old, old_new), (again, again_new), (other, other_new), plain2 = (
        yield gatherResults(calls)
    )
    assert (keyed_new, old_new, again_new, other_new) == (True, False, False, True)
    assert old == earlier and again == keyed
    assert plain1.id < keyed.id < other.id < plain2.id
    rows = query(target, "SELECT body, client_key FROM messages ORDER BY id")
    assert rows == [("earlier", "k-old"), ("plain 1", None), ("keyed", "k-new"),
                    ("same key, other sender", "k-new"), ("plain 2", None)]


@pytest_twisted.inlineCallbacks
def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits(store: Store, target: str) -> Any:
    """One write breaking a constraint inside a batch fails with StoreError; its batch-mates commit."""
    first = store.add_message(new_message("bob00001", "starts a batch"))  # flushes at once, alone

    def violate(cursor: Any) -> None:
        cursor.execute("INSERT INTO events (at, kind, peer_id, detail) VALUES (1, 'x', NULL, NULL)")

    batches_before = store.batches
    before = store.add_message(new_message("bob00001", "before"))
    bad = store._write(violate)
    after = store.add_message(new_message("bob00001", "after"))
    results = yield DeferredList([first, before, bad, after], consumeErrors=True)
    assert store.batches - batches_before == 1, "the three writes were not batched together"
    (ok0, _), (ok1, m1), (ok2, failure), (ok3, m3) = results
    assert ok0 and ok1 and ok3 and not ok2
    assert failure.check(StoreError) and "detail" in failure.getErrorMessage()  # the NOT NULL column
    assert (m1.body, m3.body) == ("before", "after")
    bodies = [row[0] for row in query(target, "SELECT body FROM messages ORDER BY id")]
    assert bodies == ["starts a batch", "before", "after"]


@pytest_twisted.inlineCallbacks
def test_the_store_keeps_working_after_a_failed_write(store: Store) -> Any:
    """A failed write leaves the queue running: the next write succeeds."""
    def broken(cursor: Any) -> None:
        cursor.execute("SELECT * FROM nowhere")

    outcome = yield DeferredList([store._write(broken)], consumeErrors=True)
    assert outcome[0][1].check(StoreError)
    message = yield store.add_message(new_message("bob00001", "next"))
    assert message.body == "next"


@pytest_twisted.inlineCallbacks
def test_close_commits_queued_writes_before_closing(target: str) -> Any:
    """close() called while writes are queued waits for them to commit; none is lost."""
    prepare(target)
    store = Store(open_pool(target))
    fired: list[Any] = []
    for i in range(50):
        store.add_message(new_message("bob00001", f"q{i}")).addBoth(fired.append)
    yield store.close()
    assert len(fired) == 50 and all(m.body == f"q{i}" for i, m in enumerate(fired))
    assert query(target, "SELECT COUNT(*) FROM messages") == [(50,)]


def test_placeholders_are_translated_in_one_place() -> None:
    """A PostgreSQL pool gets ``%s`` placeholders (and ``%%`` for a literal ``%``) from
    Store._sql; a SQLite one keeps ``?`` (DESIGN 7: portable SQL)."""
    store = Store(pool=None, dialect=POSTGRESQL)  # type: ignore[arg-type]
    assert store._sql("SELECT 1 FROM t WHERE a = ? AND b LIKE 'x%'") == "SELECT 1 FROM t WHERE a = %s AND b LIKE 'x%%'"
    assert Store(pool=None)._sql("a = ?") == "a = ?"  # type: ignore[arg-type]
    assert Store(pool=None).dialect is SQLITE  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_a_write_after_close_fails_at_once_instead_of_hanging(target: str) -> Any:
    """Once closed, the store refuses writes and reads with StoreError (the broker answers BrokerUnavailable)."""
    from twisted.internet import reactor

    prepare(target)
    store = Store(open_pool(target))
    yield store.close()
    write = store.add_message(new_message("alice001", "too late")).addTimeout(5, reactor)
    read = store.unread("alice001").addTimeout(5, reactor)
    outcome = yield DeferredList([write, read], consumeErrors=True)
    assert [f.check(StoreError) for _, f in outcome] == [StoreError, StoreError], outcome
    assert query(target, "SELECT COUNT(*) FROM messages") == [(0,)]


@pytest_twisted.inlineCallbacks
def test_closing_twice_is_harmless(target: str) -> Any:
    """A second close(), during or after the first, fires once the store is closed and raises nothing."""
    from twisted.internet import reactor

    prepare(target)
    store = Store(open_pool(target))
    store.add_message(new_message("alice001", "queued"))
    first, second = store.close(), store.close()
    yield DeferredList([first.addTimeout(5, reactor), second.addTimeout(5, reactor)], fireOnOneErrback=True)
    yield store.close().addTimeout(5, reactor)
    assert query(target, "SELECT body FROM messages") == [("queued",)]
