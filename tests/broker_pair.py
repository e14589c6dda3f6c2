"""A client ``amp.AMP`` joined to a real ``BrokerProtocol`` by ``twisted.test.iosim``: AMP tests
without sockets (``test_protocol.py``, ``test_approvals.py``, ``test_tcp_views.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.broker.core import Credentials
from claudepeers.broker.protocol import BrokerProtocol

from broker_fakes import World


class Pair:
    """A client AMP connected to a BrokerProtocol through an in-memory pump."""

    def __init__(self, world: World, creds: Credentials, token: str | None = None, locator: Any = None) -> None:
        self.server = BrokerProtocol(world.broker, token=token, credentials=lambda transport: creds, uid=0)
        self.client = amp.AMP(locator=locator) if locator is not None else amp.AMP()
        _, _, self.pump = iosim.connectedServerAndClient(lambda: self.server, lambda: self.client)
        #: every pair of this world: settling one pumps them all (pushes cross pairs)
        self.live = world.pairs
        self.live.append(self)

    @inlineCallbacks
    def call(self, command: Any, **kwargs: Any) -> Any:
        """Call a command and pump until it answers (the store works in a real thread)."""
        d = self.client.callRemote(command, **kwargs)
        result = yield self.settle(d)
        return result

    @inlineCallbacks
    def settle(self, d: Deferred) -> Any:
        """Pump the connection until ``d`` has fired; returns its result (or raises).

        The outcome is captured before pumping: AMP hands an error that arrives before
        the caller's errback is attached to its own "unhandled" handler, which drops
        the connection.
        """
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        for _ in range(2000):
            for pair in self.live:
                pair.pump.flush()
            if outcome:
                break
            yield deferLater(reactor, 0.001, lambda: None)
        assert outcome, "no answer"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    @inlineCallbacks
    def error(self, d: Deferred) -> Any:
        """The exception ``d`` fails with."""
        try:
            yield self.settle(d)
        except Exception as exc:  # handed to the test
            return exc
        pytest.fail("expected an error")
