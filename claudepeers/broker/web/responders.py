"""The dashboard's AMP command: a responder the broker's protocol inherits."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.protocols import amp
from twisted.python.failure import Failure

from claudepeers.broker import operator
from claudepeers.broker.web.auth import LINK_SECONDS
from claudepeers.wire import commands as wire


class DashboardResponders(amp.CommandLocator):
    """``OpenDashboard``: for the person only (operator.py, the same check as approvals),
    never for an agent."""

    #: Set by the protocol: its broker (``broker.dashboard``) and the connection's credentials.
    broker: Any
    creds: Any

    @wire.OpenDashboard.responder
    def open_dashboard(self) -> Any:
        """Check who asks, start the dashboard if needed, answer with a one-time link."""
        dashboard = getattr(self.broker, "dashboard", None)
        if dashboard is None:
            raise wire.InvalidArgument("this broker runs without a dashboard")
        try:
            asker = operator.require_operator(self.broker, self.creds, "open the dashboard", dashboard.processes)
        except wire.PermissionDenied as exc:
            # Recorded: an agent reaching for the operator's page is worth knowing about.
            self.broker.emit("dashboard", None, f"dashboard link refused: {exc}")
            raise
        self.broker.emit("dashboard", None, f"dashboard link issued to {asker}")
        return maybeDeferred(dashboard.link).addCallbacks(
            lambda url: {"url": url, "expires_in": LINK_SECONDS}, _cannot_listen)


def _cannot_listen(failure: Failure) -> Failure:
    if failure.check(CannotListenError):
        raise wire.InvalidArgument(
            f"the dashboard cannot listen on 127.0.0.1: {failure.value.socketError} "
            "(CLAUDE_PEERS_DASHBOARD_PORT; 0 picks a free port)")
    return failure
