"""A bound on disk (issue 11, item 8): the database's size bound and per-peer quotas.

In-process with small settings (a World broker over a real store and a Clock); the
real-process runs on a small tmpfs are in test_storage_disk.py. The quotas are tested on both
engines; the database bound only on SQLite (on PostgreSQL the server's disk is its own and
the bound is not enforced: see storage/dialect.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted

from claudepeers.common.settings import Limits, SettingError
from claudepeers.broker.storage import Guard
from claudepeers.wire.commands import LimitExceeded

from broker_fakes import FakeBridge, World
from engines import is_pg

GENEROUS = dict(messages_per_minute=10**9, max_unread=10**9)


def guarded_world(short_dir: Path, target: str | None = None, **limits: Any) -> World:
    """A World (on ``target``: default a SQLite file in ``short_dir``) whose store has a
    started Guard (its timer on the World's Clock)."""
    database = target if target is not None and is_pg(target) else None
    world = World(short_dir, Limits(**{**GENEROUS, **limits}), database=database)
    world.guard = Guard(world.store, None if database else world.db_path, world.limits, world.clock)
    return world


def _worlds(short_dir: Path, target: str | None) -> Iterator[Any]:
    worlds: list[World] = []

    def make(**limits: Any) -> World:
        world = guarded_world(short_dir, target, **limits)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.guard.stop()
        pytest_twisted.blockon(world.close())


@pytest.fixture
def make_world(short_dir: Path, db_target: str) -> Iterator[Any]:
    """Build a guarded World with given limits on each engine in turn; closed afterwards."""
    yield from _worlds(short_dir, db_target)


@pytest.fixture
def make_sqlite_world(short_dir: Path) -> Iterator[Any]:
    """Build a guarded World on a SQLite file (the database bound is measured from its pages)."""
    yield from _worlds(short_dir, None)


@pytest_twisted.inlineCallbacks
def peers(world: World, *deliveries: str) -> Any:
    """Start the broker and guard; register one peer per delivery ('push' reads at once, 'none' never)."""
    yield world.broker.start()
    yield world.guard.start()
    actors = []
    for delivery in deliveries:
        agent, bridge = world.agent()
        actor, _ = yield world.register(agent, bridge, FakeBridge(delivery=delivery), delivery=delivery)
        actors.append(actor)
    return actors


@pytest_twisted.inlineCallbacks
def attempt(world: World, sender: Any, target: Any, body: str) -> Any:
    """One send: its answer, or the LimitExceeded it raised."""
    try:
        answer = yield world.broker.send(sender, target.id, body)
    except LimitExceeded as exc:
        return exc
    return answer


def test_the_new_limits_have_defaults_and_environment_settings() -> None:
    """1 GiB database, 64 MiB unread per recipient and per sender; each settable, each checked."""
    limits = Limits()
    assert (limits.max_db_bytes, limits.max_unread_bytes, limits.max_sender_unread_bytes) == (2**30, 2**26, 2**26)
    changed = Limits.from_env({"CLAUDE_PEERS_MAX_DB_BYTES": "5000", "CLAUDE_PEERS_MAX_UNREAD_BYTES": "7",
                               "CLAUDE_PEERS_MAX_SENDER_UNREAD_BYTES": "9"})
    assert (changed.max_db_bytes, changed.max_unread_bytes, changed.max_sender_unread_bytes) == (5000, 7, 9)
    with pytest.raises(SettingError, match="CLAUDE_PEERS_MAX_DB_BYTES"):
        Limits.from_env({"CLAUDE_PEERS_MAX_DB_BYTES": "lots"})


@pytest_twisted.inlineCallbacks
def test_recipient_quota_refuses_naming_the_limit_and_reading_makes_room(make_world: Any) -> None:
    """Past max_unread_bytes of unread mail for one recipient a send is LimitExceeded naming the
    limit and its value; once the recipient reads, sends go through again."""
    world = make_world(max_unread_bytes=10_000)
    alice, carol = yield peers(world, "push", "none")
    answers = []
    for _ in range(4):
        answers.append((yield attempt(world, alice, carol, "x" * 3000)))
    assert all(isinstance(a, dict) for a in answers[:3])
    refused = answers[3]
    assert isinstance(refused, LimitExceeded)
    assert "9000 bytes of unread mail" in str(refused) and "10000 (max_unread_bytes, CLAUDE_PEERS_MAX_UNREAD_BYTES)" in str(refused)
    unread = yield world.store.unread(carol.id)
    yield world.broker.acknowledge(carol, [m.id for m in unread])
    assert isinstance((yield attempt(world, alice, carol, "x" * 3000)), dict)


@pytest_twisted.inlineCallbacks
def test_sender_quota_counts_unread_mail_across_recipients(make_world: Any) -> None:
    """max_sender_unread_bytes bounds what one sender keeps waiting in all inboxes together."""
    world = make_world(max_sender_unread_bytes=10_000)
    alice, carol, dave = yield peers(world, "push", "none", "none")
    for target in (carol, dave, carol):
        assert isinstance((yield attempt(world, alice, target, "y" * 3000)), dict)
    refused = yield attempt(world, alice, dave, "y" * 3000)
    assert isinstance(refused, LimitExceeded) and "max_sender_unread_bytes" in str(refused)
    assert "CLAUDE_PEERS_MAX_SENDER_UNREAD_BYTES" in str(refused)


@pytest_twisted.inlineCallbacks
def test_quotas_survive_a_restart(short_dir: Path, db_target: str) -> None:
    """The unread byte counts are read back from the database at start."""
    world = guarded_world(short_dir, db_target, max_unread_bytes=10_000)
    alice, carol = yield peers(world, "push", "none")
    for _ in range(3):
        yield attempt(world, alice, carol, "z" * 3000)
    world.guard.stop()
    yield world.close()
    again = guarded_world(short_dir, db_target, max_unread_bytes=10_000)
    try:
        yield again.broker.start()
        yield again.guard.start()
        assert again.guard.unread_to[carol.id] == 9000
    finally:
        again.guard.stop()
        yield again.close()


@pytest_twisted.inlineCallbacks
def test_database_bound_purges_read_mail_oldest_first_and_never_unread(make_sqlite_world: Any) -> None:
    """With a 600 kB bound: 200 read 20 kB messages (4 MB) all go through, read mail being purged
    oldest first; then unread mail fills the bound and is refused, naming max_db_bytes, and
    none of the unread mail is ever purged."""
    world = make_sqlite_world(max_db_bytes=600_000)
    alice, bob, carol = yield peers(world, "push", "push", "none")
    refusals = 0
    for number in range(200):
        answer = yield attempt(world, alice, bob, f"{number:04d}" + "r" * 20_000)
        if isinstance(answer, LimitExceeded):
            refusals += 1
            assert world.guard.purging is not None, "the refusal started a purge"
            yield world.guard.purging
            answer = yield attempt(world, alice, bob, f"{number:04d}" + "r" * 20_000)
        assert isinstance(answer, dict), answer
    assert world.guard.purged_for_bound > 150 and refusals < 50
    left = yield world.store.inbox(bob.id, 1000)
    assert [m.body[:4] for m in left] == sorted(m.body[:4] for m in left) and left[-1].body.startswith("0199")
    stored, last = 0, None
    for number in range(100):
        last = yield attempt(world, alice, carol, f"u{number:03d}" + "u" * 20_000)
        if isinstance(last, LimitExceeded) and world.guard.purging is not None:
            yield world.guard.purging  # read mail is purged to make room; then try again
            last = yield attempt(world, alice, carol, f"u{number:03d}" + "u" * 20_000)
        if isinstance(last, LimitExceeded):
            break
        stored += 1
    assert isinstance(last, LimitExceeded) and "600000 (max_db_bytes, CLAUDE_PEERS_MAX_DB_BYTES)" in str(last)
    if world.guard.purging is not None:
        yield world.guard.purging
    assert len((yield world.store.unread(carol.id))) == stored > 10
    used = yield world.store.used_bytes()
    assert used <= 600_000 + 25_000, used


@pytest_twisted.inlineCallbacks
def test_on_postgresql_the_database_bound_is_not_enforced_and_status_says_so(pg_dsn: str, short_dir: Path) -> Any:
    """On PostgreSQL max_db_bytes refuses nothing (deleted rows do not shrink the database until
    VACUUM, so purging could never meet it): status shows the size and no bound."""
    world = guarded_world(short_dir, pg_dsn, max_db_bytes=10_000)
    try:
        alice, carol = yield peers(world, "push", "none")
        for _ in range(5):
            assert isinstance((yield attempt(world, alice, carol, "p" * 5000)), dict)
        yield world.guard.tick()
        status = world.guard.status()
        assert status["max_db_bytes"] is None and status["used_bytes"] > 10_000 and status["ok"]
    finally:
        world.guard.stop()
        yield world.close()


def test_status_text_shows_storage_problems() -> None:
    """``claude-peers status`` prints each storage problem and failing write on its own line."""
    from claudepeers.cli.render import format_status

    text = format_status({"version": "x", "peers": [], "storage": {
        "problems": ["the database file /d was deleted while the broker ran"],
        "writes_failing": ["database or disk is full"]}})
    assert "STORAGE PROBLEM: the database file /d was deleted" in text
    assert "STORAGE PROBLEM: database writes are failing: database or disk is full" in text
