"""The size bound counts the write-ahead log, and makes room in the event log too."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted

from claudepeers.broker.storage.guard_sql import KEPT_EVENTS

from test_storage_bounds import attempt, make_world, peers  # noqa: F401 - make_world is a fixture


def wal_size(world: Any) -> int:
    """The database's -wal file, in bytes."""
    try:
        return os.path.getsize(f"{world.db_path}-wal")
    except FileNotFoundError:
        return 0


def sqlite_only(world: Any) -> None:
    """The database bound is measured from SQLite's file (PostgreSQL's size is its server's:
    shown in status, not enforced; see storage/dialect.py)."""
    if world.store.dialect.postgresql:
        pytest.skip("the size bound and the WAL are SQLite's; PostgreSQL does not enforce max_db_bytes")


@pytest_twisted.inlineCallbacks
def test_the_wal_is_counted_and_a_purge_gives_it_back(make_world: Any) -> None:
    """used_bytes = pages in use + the WAL file; a purge for the bound truncates the WAL."""
    world = make_world(max_db_bytes=2_000_000)
    sqlite_only(world)
    alice, bob = yield peers(world, "push", "push")
    for number in range(40):
        assert isinstance((yield attempt(world, alice, bob, "w" * 20_000)), dict)
    def measure(cursor: Any) -> tuple[int, list[int], int]:
        pages = [cursor.execute(f"PRAGMA {n}").fetchone()[0] for n in ("page_count", "freelist_count", "page_size")]
        return world.store._txn_used_bytes(cursor), pages, wal_size(world)

    used, pages, wal = yield world.store._pool.runInteraction(measure)
    assert wal > 400_000 and used == (pages[0] - pages[1]) * pages[2] + wal
    for number in range(200):  # read mail past the bound: purged, and the WAL with it
        answer = yield attempt(world, alice, bob, "w" * 20_000)
        if world.guard.purging is not None:
            yield world.guard.purging
        if isinstance(answer, Exception):
            assert isinstance((yield attempt(world, alice, bob, "w" * 20_000)), dict)
    assert world.guard.purged_for_bound > 0
    # Over by at most a batch and the search index's pages for it (schema v6's FTS5 tables).
    assert (yield world.store.used_bytes()) <= 2_000_000 + 60_000
    assert wal_size(world) < 2_000_000


@pytest_twisted.inlineCallbacks
def test_old_events_are_purged_by_the_bound_when_read_mail_is_not_enough(make_world: Any) -> None:
    """An event log past the bound: a send is refused, the oldest events are purged (the
    newest KEPT_EVENTS stay, unread mail and the kill audit are kept), the send then goes."""
    world = make_world(max_db_bytes=400_000)
    sqlite_only(world)
    alice, carol = yield peers(world, "push", "none")
    assert isinstance((yield attempt(world, alice, carol, "unread")), dict)
    yield world.store.record_kill(1.0, alice.id, carol.id, 1, "refused", "kept")
    for number in range(1500):
        stored = world.store.add_event(float(number), "register", alice.id, f"{number:05d} " + "e" * 400)
    yield stored
    yield world.guard._measure()
    assert world.guard.status()["used_bytes"] > 400_000
    refused = yield attempt(world, alice, carol, "x" * 1000)
    assert isinstance(refused, Exception) and world.guard.purging is not None
    yield world.guard.purging
    assert isinstance((yield attempt(world, alice, carol, "x" * 1000)), dict)
    events = yield world.store.recent_events(10_000)
    assert len(events) <= KEPT_EVENTS + 5 and events[-1]["detail"].startswith("01499")
    assert [m.body for m in (yield world.store.unread(carol.id))] == ["unread", "x" * 1000]
    assert len((yield world.store.kills())) == 1
