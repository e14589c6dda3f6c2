"""This broker as a host (hosts.py) against the real PostgreSQL server: the host name's lock,
the brokers row and its heartbeat, and the view of other hosts. No broker process: the
registration runs in the test's reactor."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from claudepeers.broker import hosts

pytest.importorskip("psycopg")


@pytest.fixture
def database(pg_server: Any) -> Iterator[str]:
    """A DSN of a fresh database with the schema (advisory locks are per database)."""
    from claudepeers.broker.storage import pgdatabase

    name = pg_server.fresh_database()
    dsn = pg_server.dsn(name)
    pgdatabase.prepare(dsn)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


def registration(dsn: str, host: str, **options: Any) -> hosts.HostRegistration:
    from twisted.internet import reactor

    from claudepeers.broker.joining import connector

    return hosts.HostRegistration(dsn, host, "test", reactor, address=f"test {host}", connect=connector(dsn),
                                  **options)


def test_host_names_are_checked() -> None:
    """CLAUDE_PEERS_HOST is used as given when valid and refused, naming the rule, when not;
    without it the hostname is made into a valid name."""
    assert hosts.host_name({"CLAUDE_PEERS_HOST": "build-box.2"}) == "build-box.2"
    with pytest.raises(hosts.HostNameError, match="1 to 40 letters"):
        hosts.host_name({"CLAUDE_PEERS_HOST": "a b"})
    assert hosts.HOST_NAME.fullmatch(hosts.host_name({}))
    assert hosts.lock_key("a") != hosts.lock_key("b") and hosts.lock_key("a")[0] == hosts.LOCK_CLASS


@pytest_twisted.inlineCallbacks
def test_one_broker_per_host_name_and_the_lock_goes_with_its_connection(database: str) -> None:
    """A second registration of the same name is refused naming the holder's address; once the
    first stops (its connection closes) the name is free again."""
    first = registration(database, "alpha")
    yield first.start()
    second = registration(database, "alpha")
    with pytest.raises(hosts.HostTaken, match=r"host 'alpha' .*test alpha, heartbeat"):
        yield second.start()
    other = registration(database, "beta")
    yield other.start()
    assert set(other.hosts) == {"alpha", "beta"} and other.reachable("alpha")
    yield first.stop()
    again = registration(database, "alpha")
    yield again.start()
    yield again.stop()
    yield other.stop()


@pytest_twisted.inlineCallbacks
def test_a_host_whose_heartbeat_stopped_is_unreachable(database: str, pg_server: Any) -> None:
    """By the database's clock: a heartbeat older than three beats makes the host unreachable."""
    alpha = registration(database, "alpha", heartbeat=0.2)
    beta = registration(database, "beta", heartbeat=0.2)
    yield alpha.start()
    yield beta.start()
    stale: Deferred = Deferred()

    def beat(view: dict[str, Any]) -> None:
        if not stale.called and "beta" in view and not view["beta"].reachable:
            stale.callback(view)

    alpha.on_beat = beat
    yield beta.stop()  # beats no more
    pg_server.execute("UPDATE brokers SET heartbeat_at = heartbeat_at - 60 WHERE host = 'beta'",
                      database.split("dbname=")[1])
    view = yield stale
    assert view["beta"].heartbeat_age >= 60 and not alpha.reachable("beta") and alpha.reachable("alpha")
    assert view["alpha"].reachable
    yield alpha.stop()


@pytest_twisted.inlineCallbacks
def test_a_host_that_joined_since_the_last_beat_is_known_after_a_refresh(database: str) -> None:
    """Between heartbeats a new host is unknown (so unreachable); refresh() reads the rows
    at once, which the network does before it shows a peer of a host it has not heard of."""
    alpha = registration(database, "alpha", heartbeat=60)
    yield alpha.start()
    beta = registration(database, "beta", heartbeat=60)
    yield beta.start()
    assert "beta" not in alpha.hosts and not alpha.reachable("beta")
    view = yield alpha.refresh()
    assert "beta" in view and alpha.reachable("beta")
    yield beta.stop()
    yield alpha.stop()

