"""The broker's handle on its dashboard: nothing is built (and twisted.web not imported,
about 0.15 s) until the operator first asks for a link."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from claudepeers.broker import operator


class DashboardOnDemand:
    """What the service hangs on ``broker.dashboard``."""

    def __init__(self, broker: Any, reactor: Any, port: int = 0) -> None:
        """``port``: the setting CLAUDE_PEERS_DASHBOARD_PORT (0: any free port)."""
        self._broker = broker
        self._reactor = reactor
        self._port = port
        #: The process table the person-only check walks (None: the live one; tests stand in).
        self.processes: operator.ProcessTable | None = None
        self.dashboard: Any = None

    def link(self) -> Deferred:
        """Build the dashboard the first time, then fire with a new one-time link."""
        if self.dashboard is None:
            from claudepeers.broker.web.server import Dashboard

            self.dashboard = Dashboard(self._broker, self._reactor, self._port)
        return self.dashboard.link()

    def stop(self) -> Deferred:
        """Stop the dashboard if it was ever started."""
        return self.dashboard.stop() if self.dashboard is not None else succeed(None)
