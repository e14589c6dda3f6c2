"""The PostgreSQL LISTEN connection (storage/listener.py) against the run's own server.

Notifications arrive in the reactor thread, only once their transaction commits, and after
the connection is lost the listener reconnects (with backoff) and says so, so that its user
reads what it missed. Skipped where there is no PostgreSQL (the reason says how to get one).
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from claudepeers.broker.storage.listener import Listener

from engines import query

_channels = itertools.count()


class Events:
    """What a listener reported, with Deferreds to wait for the next of each kind."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []
        self.connects = 0
        self.lost: list[str] = []
        self.threads: set[int] = set()
        self._waiting: dict[str, list[Deferred]] = {"note": [], "connect": [], "lost": []}

    def next(self, kind: str, timeout: float = 10.0) -> Deferred:
        """Fires with the next event of ``kind`` (note, connect, lost)."""
        d: Deferred = Deferred()
        self._waiting[kind].append(d)
        return d.addTimeout(timeout, reactor)

    def _fire(self, kind: str, value: Any) -> None:
        self.threads.add(threading.get_ident())
        waiting, self._waiting[kind] = self._waiting[kind], []
        for d in waiting:
            d.callback(value)

    def on_notify(self, channel: str, payload: str) -> None:
        """The listener's on_notify."""
        self.notes.append((channel, payload))
        self._fire("note", (channel, payload))

    def on_connect(self) -> None:
        """The listener's on_connect."""
        self.connects += 1
        self._fire("connect", self.connects)

    def on_lost(self, reason: str) -> None:
        """The listener's on_lost."""
        self.lost.append(reason)
        self._fire("lost", reason)


@pytest.fixture
def channel() -> str:
    """A channel no other test uses (the run's tests share one database)."""
    return f"cp_test_{os.getpid()}_{next(_channels)}"


@pytest.fixture
def listening(pg_server: Any, channel: str) -> Iterator[tuple[Listener, Events]]:
    """A started Listener on ``channel`` and what it reported; stopped afterwards."""
    events = Events()
    connected = events.next("connect")
    listener = Listener(pg_server.dsn(), channel, events.on_notify, events.on_connect, events.on_lost,
                        backoff=(0.05, 0.5))
    listener.start()
    pytest_twisted.blockon(connected)
    yield listener, events
    pytest_twisted.blockon(listener.stop().addTimeout(10, reactor))


def notify(pg_server: Any, channel: str, payload: str, commit: bool = True) -> None:
    """pg_notify inside a transaction that commits (or rolls back)."""
    import psycopg

    with psycopg.connect(pg_server.dsn()) as connection:
        connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        connection.commit() if commit else connection.rollback()


@pytest_twisted.inlineCallbacks
def test_a_committed_notification_reaches_the_reactor_thread(listening: Any, pg_server: Any, channel: str) -> Any:
    """on_connect comes first, then each committed pg_notify, in order, in the reactor's thread."""
    listener, events = listening
    assert listener.connected and events.connects == 1
    arrived = events.next("note")
    notify(pg_server, channel, "first")
    notify(pg_server, channel, "second")
    assert (yield arrived) == (channel, "first")
    if len(events.notes) < 2:
        yield events.next("note")
    assert events.notes == [(channel, "first"), (channel, "second")]
    assert events.threads == {threading.get_ident()}


@pytest_twisted.inlineCallbacks
def test_a_rolled_back_notification_reaches_nobody(listening: Any, pg_server: Any, channel: str) -> Any:
    """pg_notify in a transaction that rolls back is never delivered (the send that failed wakes nobody)."""
    _, events = listening
    arrived = events.next("note")
    notify(pg_server, channel, "rolled back", commit=False)
    notify(pg_server, channel, "committed")
    assert (yield arrived) == (channel, "committed")
    assert events.notes == [(channel, "committed")]


@pytest_twisted.inlineCallbacks
def test_a_lost_connection_is_reported_and_listening_resumes(listening: Any, pg_server: Any, channel: str) -> Any:
    """When the server ends the LISTEN connection, on_lost fires, the listener reconnects and
    calls on_connect again (the caller reads what it missed), and notifications flow again."""
    listener, events = listening
    lost, reconnected = events.next("lost"), events.next("connect")
    pg_server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE query LIKE 'LISTEN \"{channel}\"%'")
    assert "terminat" in (yield lost)
    assert (yield reconnected) == 2
    assert listener.connected and listener.connections == 2
    arrived = events.next("note")
    notify(pg_server, channel, "after the reconnect")
    assert (yield arrived) == (channel, "after the reconnect")


@pytest_twisted.inlineCallbacks
def test_an_unreachable_server_is_retried_with_its_password_masked(short_dir: Any) -> Any:
    """A listener whose server is not there keeps retrying; its error never shows the password."""
    events = Events()
    listener = Listener(f"postgresql://peer:s3cret-pw@/peers?host={short_dir}", "cp_nowhere", events.on_notify,
                        events.on_connect, events.on_lost, backoff=(0.01, 0.05))
    first = events.next("lost")
    listener.start()
    reason = yield first
    yield events.next("lost")  # and again: it retries
    yield listener.stop().addTimeout(5, reactor)
    assert "s3cret-pw" not in reason and "s3cret-pw" not in (listener.last_error or "")
    assert str(short_dir) in reason and events.connects == 0 and not listener.connected


def test_channel_names_are_checked() -> None:
    """A channel name PostgreSQL would truncate (over 63 bytes) or an empty one is refused."""
    with pytest.raises(ValueError, match="63 bytes"):
        Listener("host=/nowhere", "x" * 64, lambda channel, payload: None)
    with pytest.raises(ValueError):
        Listener("host=/nowhere", "", lambda channel, payload: None)


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_listening_resumes_after_the_server_restarts(pg_server: Any, channel: str) -> Any:
    """A restart of PostgreSQL itself (fast shutdown, then start): lost, reconnected, flowing."""
    events = Events()
    listener = Listener(pg_server.dsn(), channel, events.on_notify, events.on_connect, events.on_lost,
                        backoff=(0.05, 0.5))
    connected = events.next("connect")
    listener.start()
    yield connected
    try:
        for round_number in range(3):
            lost, reconnected = events.next("lost", 30), events.next("connect", 30)
            pg_server.restart()
            yield lost
            yield reconnected
            arrived = events.next("note")
            notify(pg_server, channel, f"round {round_number}")
            assert (yield arrived) == (channel, f"round {round_number}")
    finally:
        yield listener.stop().addTimeout(10, reactor)


@pytest_twisted.inlineCallbacks
def test_a_store_notification_wakes_a_listener_after_its_batch_commits(listening: Any, pg_dsn: str,
                                                                        channel: str) -> Any:
    """Store.notify joins the group commit: the listener is woken once the writes queued before
    it are committed, and can read them (the record is the table)."""
    from claudepeers.broker.records import NewMessage
    from claudepeers.broker.storage import Store, open_pool, prepare

    _, events = listening
    prepare(pg_dsn)
    store = Store(open_pool(pg_dsn))
    try:
        arrived = events.next("note")
        stored = store.add_message(NewMessage("a", "a", "", "/", "codex", True, "bob00001", "wake up", 1.0))
        store.notify(channel, "bob00001")
        assert (yield arrived) == (channel, "bob00001")
        # Woken at COMMIT: another connection already sees the message.
        assert query(pg_dsn, "SELECT body FROM messages") == [("wake up",)]
        yield stored
    finally:
        yield store.close()
