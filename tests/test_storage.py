"""Storage: schema creation and upgrades (database.py) and the group-committing Store.

The Store runs on the real reactor (adbapi works in a thread); every check of what is
stored goes through a separate connection, the way another process would see it. The store's
tests and the schema's (creation, upgrades, "upgraded equals fresh") run on both engines, SQLite
and PostgreSQL (the ``db_target`` fixture); the file's own (modes, temporary file, backup) on
SQLite. Faults (corrupt, read-only, locked, disk full) live in ``test_storage_faults.py``.
"""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList, gatherResults

from claudepeers.broker.records import GONE, OFFLINE, ONLINE, NewMessage, PeerRecord
from claudepeers.broker.storage import Store, StoreError, database, open_pool, prepare
from claudepeers.broker.storage.dialect import POSTGRESQL, SQLITE

from engines import create, dump_schema, is_pg, query, tables


def new_message(to_id: str, body: str = "hello", from_id: str = "sender01", sent_at: float = 1000.0) -> NewMessage:
    """A message ready to store."""
    return NewMessage(from_id=from_id, from_name="sender", from_summary="testing", from_cwd="/repo",
                      from_client="claude-code", verified=True, to_id=to_id, body=body, sent_at=sent_at)


def peer(peer_id: str, state: str = ONLINE, gone_at: float | None = None, name: str | None = None) -> PeerRecord:
    """A peer record with plausible fields."""
    return PeerRecord(id=peer_id, host="host-a", agent_pid=4242, agent_start=100.0, client_type="claude-code",
                      name=name or peer_id, cwd="/repo", git_root="/repo", git_common_dir="/repo/.git",
                      branch="main", tty=None, summary="", state=state, registered_at=100.0, last_seen=200.0,
                      gone_at=gone_at)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's database lives (not yet created)."""
    return tmp_path / "peers.db"


@pytest.fixture
def target(db_target: str) -> str:
    """The test's database on each engine in turn: a SQLite path, then a PostgreSQL DSN."""
    return db_target


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    """A Store on a freshly prepared database, closed afterwards."""
    prepare(target)
    the_store = Store(open_pool(target))
    try:
        yield the_store
    finally:
        pytest_twisted.blockon(the_store.close())


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


# --- the store: inbox semantics -------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_unread_is_oldest_first_and_only_the_recipients(store: Store) -> Any:
    """unread() lists only the peer's unacknowledged messages, in the order they were accepted."""
    stored = []
    for i in range(6):
        stored.append((yield store.add_message(new_message("alice001" if i % 2 == 0 else "bob00001", f"n{i}"))))
    unread = yield store.unread("alice001")
    assert [m.body for m in unread] == ["n0", "n2", "n4"]
    assert [m.id for m in unread] == sorted(m.id for m in unread)


@pytest_twisted.inlineCallbacks
def test_unread_pages_with_limit_and_after_id(store: Store) -> Any:
    """unread(limit=, after_id=) returns the next page, still in order."""
    stored = yield gatherResults([store.add_message(new_message("alice001", f"p{i}")) for i in range(5)])
    first = yield store.unread("alice001", limit=2)
    rest = yield store.unread("alice001", after_id=first[-1].id)
    assert [m.body for m in first] == ["p0", "p1"]
    assert [m.body for m in rest] == ["p2", "p3", "p4"]
    assert [m.id for m in first + rest] == [m.id for m in stored]


@pytest_twisted.inlineCallbacks
def test_acknowledge_marks_only_the_recipients_own_unread_messages(store: Store) -> Any:
    """Acknowledging ids of someone else's mail, or unknown ids, marks nothing of theirs."""
    mine = yield store.add_message(new_message("alice001", "for alice"))
    theirs = yield store.add_message(new_message("bob00001", "for bob"))
    marked = yield store.acknowledge("alice001", [mine.id, theirs.id, 999_999], when=2000.0)
    assert marked == [mine.id]
    assert [m.id for m in (yield store.unread("bob00001"))] == [theirs.id]
    assert (yield store.unread("alice001")) == []


@pytest_twisted.inlineCallbacks
def test_acknowledge_twice_returns_nothing_the_second_time(store: Store) -> Any:
    """A repeated acknowledgement is idempotent: it returns [] and keeps the first time."""
    message = yield store.add_message(new_message("alice001"))
    assert (yield store.acknowledge("alice001", [message.id, message.id], when=2000.0)) == [message.id]
    assert (yield store.acknowledge("alice001", [message.id], when=3000.0)) == []
    inbox = yield store.inbox("alice001", 10)
    assert [m.acked_at for m in inbox] == [2000.0]


@pytest_twisted.inlineCallbacks
def test_acknowledgements_in_one_commit_mark_each_id_for_its_first_asker(store: Store) -> Any:
    """Acknowledgements batched together (one statement on PostgreSQL) answer as one by one would:
    an id asked for twice is marked, at its time, for the first asker only; another peer's id not at all."""
    m1, m2, m3 = yield gatherResults([store.add_message(new_message("alice001", f"a{i}")) for i in range(3)])
    store.add_message(new_message("bob00001", "starts a batch"))  # flushes at once: the rest queue together
    batches = store.batches
    first = store.acknowledge("alice001", [m1.id, m2.id], when=5.0)
    second = store.acknowledge("alice001", [m2.id, m3.id], when=6.0)
    stranger = store.acknowledge("bob00001", [m3.id], when=7.0)
    assert (yield gatherResults([first, second, stranger])) == [[m1.id, m2.id], [m3.id], []]
    assert store.batches - batches == 1
    assert [(m.id, m.acked_at) for m in (yield store.inbox("alice001", 10))] == [(m1.id, 5.0), (m2.id, 5.0), (m3.id, 6.0)]


@pytest_twisted.inlineCallbacks
def test_acknowledge_handles_more_ids_than_one_sql_statement_takes(store: Store) -> Any:
    """1,200 ids in one acknowledgement are all marked (the store splits the IN list)."""
    stored = yield gatherResults([store.add_message(new_message("alice001", str(i))) for i in range(1200)])
    marked = yield store.acknowledge("alice001", [m.id for m in stored], when=2000.0)
    assert sorted(marked) == [m.id for m in stored]
    assert (yield store.unread_counts()) == {}


@pytest_twisted.inlineCallbacks
def test_unread_counts_per_recipient(store: Store) -> Any:
    """unread_counts() counts each peer's unacknowledged messages and omits peers with none."""
    a = yield store.add_message(new_message("alice001"))
    yield store.add_message(new_message("alice001"))
    yield store.add_message(new_message("bob00001"))
    yield store.acknowledge("alice001", [a.id], when=1.0)
    assert (yield store.unread_counts()) == {"alice001": 1, "bob00001": 1}


@pytest_twisted.inlineCallbacks
def test_message_states_answer_only_the_senders_own_messages(store: Store) -> Any:
    """message_states(from_id, ids) reports recipient and ack time only for that sender's messages."""
    sent = yield store.add_message(new_message("bob00001", from_id="alice001"))
    other = yield store.add_message(new_message("bob00001", from_id="carol001"))
    yield store.acknowledge("bob00001", [sent.id], when=7.0)
    states = yield store.message_states("alice001", [sent.id, other.id])
    assert states == {sent.id: ("bob00001", 7.0)}


@pytest_twisted.inlineCallbacks
def test_inbox_shows_the_latest_read_and_unread_oldest_first(store: Store) -> Any:
    """inbox(peer, limit) returns the newest ``limit`` messages, read or not, oldest first."""
    stored = yield gatherResults([store.add_message(new_message("alice001", f"i{i}")) for i in range(4)])
    yield store.acknowledge("alice001", [stored[3].id], when=9.0)
    inbox = yield store.inbox("alice001", 3)
    assert [(m.body, m.acked_at) for m in inbox] == [("i1", None), ("i2", None), ("i3", 9.0)]


# --- the store: peers, events, kills, retention -------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_save_peer_inserts_then_updates_the_same_row(store: Store) -> Any:
    """Saving a peer twice keeps one row holding the latest values."""
    yield store.save_peer(peer("alice001"))
    yield store.save_peer(replace(peer("alice001"), summary="refactoring", state=OFFLINE))
    peers = yield store.load_peers()
    assert peers == [replace(peer("alice001"), summary="refactoring", state=OFFLINE)]


@pytest_twisted.inlineCallbacks
def test_load_peers_can_leave_out_gone_peers(store: Store) -> Any:
    """load_peers(include_gone=False) skips peers whose state is gone."""
    yield store.save_peer(peer("alice001"))
    yield store.save_peer(peer("bob00001", state=GONE, gone_at=50.0))
    assert [p.id for p in (yield store.load_peers(include_gone=False))] == ["alice001"]
    assert sorted(p.id for p in (yield store.load_peers())) == ["alice001", "bob00001"]


@pytest_twisted.inlineCallbacks
def test_events_and_kills_are_recorded_in_order(store: Store) -> Any:
    """Events come back oldest first; kill records newest first with every field."""
    yield store.add_event(1.0, "register", "alice001", "joined")
    yield store.add_event(2.0, "leave", "alice001", "")
    yield store.record_kill(3.0, "bob00001", "alice001", 4242, "terminated", "SIGTERM")
    yield store.record_kill(4.0, "bob00001", "carol001", 4343, "refused", "not the agent")
    events = yield store.recent_events(10)
    assert [(e["at"], e["kind"]) for e in events] == [(1.0, "register"), (2.0, "leave")]
    kills = yield store.kills()
    assert [k["target_id"] for k in kills] == ["carol001", "alice001"]
    assert kills[1] == {"at": 3.0, "by_id": "bob00001", "target_id": "alice001", "target_pid": 4242,
                        "outcome": "terminated", "detail": "SIGTERM"}


@pytest_twisted.inlineCallbacks
def test_purge_forgets_peers_gone_before_the_retention_cutoff_with_their_mail(store: Store) -> Any:
    """A peer gone before the cutoff is deleted together with its unread mail."""
    yield store.save_peer(peer("gone0001", state=GONE, gone_at=100.0))
    yield store.add_message(new_message("gone0001", "never read"))
    deleted = yield store.purge(before=500.0)
    assert deleted == (1, 1)
    assert (yield store.load_peers()) == []
    assert (yield store.inbox("gone0001", 10)) == []


@pytest_twisted.inlineCallbacks
def test_purge_keeps_a_recently_gone_peers_unread_mail(store: Store) -> Any:
    """A peer gone after the cutoff is still in its retention period: it and its mail stay."""
    yield store.save_peer(peer("gone0002", state=GONE, gone_at=900.0))
    kept = yield store.add_message(new_message("gone0002", "read me with the CLI", sent_at=1.0))
    assert (yield store.purge(before=500.0)) == (0, 0)
    assert [m.id for m in (yield store.unread("gone0002"))] == [kept.id]


@pytest_twisted.inlineCallbacks
def test_purge_keeps_live_peers_old_unread_mail_and_drops_their_old_read_mail(store: Store) -> Any:
    """Live peers' unread mail is never purged, however old; their read mail goes after the cutoff."""
    yield store.save_peer(peer("alive001"))
    yield store.save_peer(peer("away0001", state=OFFLINE))
    unread_old = yield store.add_message(new_message("alive001", "old but unread", sent_at=1.0))
    offline_old = yield store.add_message(new_message("away0001", "waits for reconnect", sent_at=1.0))
    read_old = yield store.add_message(new_message("alive001", "read long ago", sent_at=1.0))
    read_new = yield store.add_message(new_message("alive001", "read recently", sent_at=1.0))
    yield store.acknowledge("alive001", [read_old.id], when=10.0)
    yield store.acknowledge("alive001", [read_new.id], when=900.0)
    assert (yield store.purge(before=500.0)) == (1, 0)
    assert [m.id for m in (yield store.inbox("alive001", 10))] == [unread_old.id, read_new.id]
    assert [m.id for m in (yield store.unread("away0001"))] == [offline_old.id]


@pytest_twisted.inlineCallbacks
def test_purge_drops_events_older_than_the_cutoff(store: Store) -> Any:
    """Events before the cutoff are forgotten; later ones stay."""
    yield store.add_event(10.0, "register", "a", "")
    yield store.add_event(900.0, "register", "b", "")
    yield store.purge(before=500.0)
    assert [e["peer_id"] for e in (yield store.recent_events(10))] == ["b"]


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
