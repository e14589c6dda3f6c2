"""Storage: the Store's inbox (unread, acknowledgements, counts, states), its peers, events,
kills and retention, on both engines (the ``db_target`` fixture); every check of what is
stored goes through a separate connection, the way another process would see it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest_twisted
from twisted.internet.defer import gatherResults

from claudepeers.broker.records import GONE, OFFLINE
from claudepeers.broker.storage import Store

from storage_support import new_message, peer
from storage_support import store, target  # noqa: F401 - fixtures


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
