"""The TCP ping of a bound connection (BrokerProtocol.send_ping, its deadline on TimeoutMixin)
and the broker service's periodic jobs, without sockets: iosim pairs on the World's Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.application.internet import TimerService
from twisted.protocols import amp
from twisted.test import iosim

from claudepeers.broker.core import Credentials
from claudepeers.broker.protocol import BrokerProtocol
from claudepeers.broker.service import BrokerService
from claudepeers.common.settings import Settings
from claudepeers.wire import commands as wire

from broker_fakes import World

DEADLINE = 30.0


@pytest.fixture
def world(short_dir: Path) -> Iterator[World]:
    """A started in-process broker on a Clock, closed after the test."""
    w = World(short_dir)
    pytest_twisted.blockon(w.broker.start())
    yield w
    pytest_twisted.blockon(w.close())


class Pinged(amp.CommandLocator):
    """The client's end: counts the pings it answers."""

    def __init__(self) -> None:
        self.pings = 0

    @wire.Ping.responder
    def ping(self) -> dict:
        """Answer a ping."""
        self.pings += 1
        return {}


def _authenticated(world: World) -> tuple[BrokerProtocol, Pinged, Any]:
    server = BrokerProtocol(world.broker, token="secret", credentials=lambda transport: Credentials("tcp"), uid=0)
    locator = Pinged()
    client = amp.AMP(locator=locator)
    _, _, pump = iosim.connectedServerAndClient(lambda: server, lambda: client)
    answered: list[Any] = []
    client.callRemote(wire.Authenticate, token="secret").addBoth(answered.append)
    pump.flush()
    assert answered == [{}] and server.bound
    return server, locator, pump


def test_a_client_that_answers_the_ping_stays_connected(world: World) -> None:
    """The answer ends the deadline: time passing after it drops nothing."""
    server, client, pump = _authenticated(world)
    server.send_ping(DEADLINE)
    pump.flush()
    world.clock.advance(DEADLINE * 3)
    pump.flush()
    assert client.pings == 1 and not server.closed


def test_a_client_that_does_not_answer_is_dropped_at_the_deadline(world: World) -> None:
    """No answer within the deadline: the connection is aborted, not a moment before."""
    server, client, pump = _authenticated(world)
    server.send_ping(DEADLINE)  # never pumped: the client hears nothing, answers nothing
    world.clock.advance(DEADLINE - 1)
    assert not server.transport.disconnecting
    world.clock.advance(1)
    assert server.transport.disconnecting


def test_a_second_ping_keeps_the_first_ones_deadline(world: World) -> None:
    """The loop's next ping while one is unanswered must not push the deadline back."""
    server, _, _ = _authenticated(world)
    server.send_ping(DEADLINE)
    world.clock.advance(DEADLINE - 1)
    server.send_ping(DEADLINE)
    world.clock.advance(1)
    assert server.transport.disconnecting


def test_an_unbound_connection_keeps_its_admission_deadline(world: World) -> None:
    """Before the token, the one timer is admission's (unbound_seconds), not a ping's."""
    server = BrokerProtocol(world.broker, token="secret", credentials=lambda transport: Credentials("tcp"), uid=0)
    iosim.connectedServerAndClient(lambda: server, lambda: amp.AMP())
    world.clock.advance(world.limits.unbound_seconds - 0.1)
    assert not server.transport.disconnecting
    world.clock.advance(0.1)
    assert server.transport.disconnecting


@pytest_twisted.inlineCallbacks
def test_the_service_composes_its_periodic_jobs_as_timer_services(short_dir: Path) -> Any:
    """Reaper, database file check and socket check are TimerService children of the
    service (a MultiService), on the service's reactor, and stop with it."""
    from twisted.internet import reactor

    settings = Settings.from_env().with_changes(socket_path=short_dir / "run" / "cp.sock", db_path=short_dir / "p.db",
                                                token_path=short_dir / "run" / "cp.token", db_dsn=None,
                                                tcp_enabled=False, manhole_path=None)
    service = BrokerService(settings, reactor, own_process=False)
    service.startService()
    try:
        yield service.ready
        assert service.failed is None
        timers = [child for child in service if isinstance(child, TimerService)]
        assert service.broker.reaper in timers and service.guard.timer in timers and len(timers) == 3
        assert all(timer.running and timer.clock is reactor for timer in timers)
    finally:
        yield service.stopService()
    assert not any(timer.running for timer in timers)
    assert not (short_dir / "run" / "cp.sock").exists()
