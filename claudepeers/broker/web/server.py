"""The dashboard inside the broker process: off until the operator asks for a link.

``Dashboard.link()`` (the ``OpenDashboard`` command, once the broker has checked that no
agent asks: operator.py) starts the HTTP listener on 127.0.0.1 the first time, at the
configured port (``CLAUDE_PEERS_DASHBOARD_PORT``; 0 picks a free one), and returns a link
with a new one-time token. It listens until the broker stops.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudepeers.broker import operator
from claudepeers.broker.web import auth
from claudepeers.broker.web.actions import Actions
from claudepeers.broker.web.site import DashboardResource, DashboardSite
from claudepeers.broker.web.stream import EventStream
from claudepeers.common import agents

#: The only address the dashboard listens on and answers for.
HOST = "127.0.0.1"


class Dashboard:
    """The operator's web page: sessions, the event stream, and the listener."""

    log = Logger()

    def __init__(self, broker: Any, reactor: Any, port: int = 0, clock: Any = None,
                 describe: Any = agents.describe, processes: operator.ProcessTable | None = None) -> None:
        """``port``: where to listen (0: any free one); ``clock``: timers and expiry (the
        reactor unless a test passes a Clock); ``describe`` and ``processes``: the process
        table lookups (kill confirmations, the person-only check; None: the live one), for
        tests to stand in."""
        self._broker = broker
        self._reactor = reactor
        self._wanted_port = port
        clock = reactor if clock is None else clock
        self.processes = processes
        self.sessions = auth.Sessions(clock)
        self.stream = EventStream(broker, clock)
        self.actions = Actions(broker, describe)
        self._listening: Any = None
        self._waiting: list[Deferred] = []
        self.port: int | None = None

    @property
    def host_header(self) -> bytes:
        """The Host header every request must carry."""
        return f"{HOST}:{self.port}".encode("ascii")

    @property
    def origin(self) -> bytes:
        """The Origin every state-changing request must carry."""
        return auth.origin_of(HOST, self.port or 0)

    def link(self) -> Deferred:
        """Start listening if not yet, then fire with a new one-time link."""
        return self._ready().addCallback(
            lambda _: f"http://{HOST}:{self.port}/?token={self.sessions.issue_link_token()}")

    def _ready(self) -> Deferred:
        if self._listening is not None:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:  # the first asker starts the listener; others wait for it
            site = DashboardSite(DashboardResource(self))
            endpoint = TCP4ServerEndpoint(self._reactor, self._wanted_port, interface=HOST)
            endpoint.listen(site).addBoth(self._listened)
        return waiter

    def _listened(self, result: Any) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            self.log.warn("the dashboard cannot listen on {host}:{port}: {why}", host=HOST, port=self._wanted_port,
                          why=result.getErrorMessage())
            for waiter in waiting:
                waiter.errback(result)
            return
        self._listening = result
        self.port = result.getHost().port
        self._broker.info["dashboard"] = f"http://{HOST}:{self.port}/"
        self._broker.emit("broker", None, f"dashboard listening on http://{HOST}:{self.port}/")
        for waiter in waiting:
            waiter.callback(None)

    def stop(self) -> Deferred:
        """End every page's stream and stop listening; forget every session."""
        self.stream.close()
        self.sessions.end_all()
        port, self._listening = self._listening, None
        return port.stopListening() if port is not None else succeed(None)
