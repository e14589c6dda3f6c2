"""AMP responders of the operator's commands (``KillPeer``, ``Status``, ``Inbox``,
``RecentEvents``, ``Watch``, ``StopBroker``).

A mixin of :class:`~claudepeers.broker.protocol.BrokerProtocol`. What a TCP client may see
of these is :mod:`.views`'s to decide; a kill and a stop need the UNIX socket.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from claudepeers.broker import views
from claudepeers.wire import commands as wire


class OperatorResponders(amp.CommandLocator):
    """The operator's commands of one connection (its attributes are the BrokerProtocol's)."""

    broker: Any
    actor: Any
    creds: Any
    _events_of: str | None

    @wire.KillPeer.responder
    def kill_peer(self, target: str) -> Deferred:
        """Verified kill of another peer's agent session."""
        return self.broker.kill(self.actor, self.creds, target).addCallback(
            lambda result: {"outcome": result[0], "peer_id": result[1], "detail": result[2]}
        )

    @wire.Status.responder
    def status(self) -> dict:
        """Broker health and peers (over TCP, the caller's own peer only: views.py)."""
        return {"status": views.status(self.broker, self.creds, self.actor)}

    @wire.Inbox.responder
    def inbox(self, target: str, limit: int | None = None) -> Deferred:
        """A peer's stored mail, read-only."""
        views.check_inbox(self.broker, self.creds, self.actor, target)
        return self.broker.inbox(target, limit).addCallback(lambda messages: {"messages": messages})

    @wire.RecentEvents.responder
    def recent_events(self, limit: int | None = None) -> dict:
        """Recent events, oldest first."""
        only = views.events_for(self.creds, self.actor, "the event log")
        return {"events": self.broker.events.recent(limit or 100, only)}

    @wire.Watch.responder
    def watch(self) -> dict:
        """Stream future events to this connection."""
        self._events_of = views.events_for(self.creds, self.actor, "the event stream")
        self.broker.events.watch(self)
        return {}

    @wire.StopBroker.responder
    def stop_broker(self) -> dict:
        """Answer, then stop the broker cleanly (the socket only: TCP may not stop every peer's broker)."""
        if self.creds.transport != "unix":
            raise wire.PermissionDenied("stopping the broker needs the UNIX socket")
        self.broker.request_stop()
        return {"pid": os.getpid()}
