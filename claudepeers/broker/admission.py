"""What a connection may cost the broker before it is bound (DESIGN 4, Security).

A connection is *bound* once it has shown the token (TCP) or made a first command beyond
``Hello``, ``Ping`` and ``Authenticate`` (UNIX, whose uid the kernel vouches for). Until
then it has

- a deadline (``unbound_seconds``, Twisted's ``TimeoutMixin``): it is dropped when it passes;
- small boxes before the token (``unbound_box_bytes``, ``UNBOUND_BOX_KEYS``), checked by
  LeanAMP before a string is buffered, so an endless box costs at most that much;
- a place among at most ``max_unbound`` such connections of its listener: a newcomer over
  that closes the oldest of them at once. (Not the newcomer: idle connections held by an
  attacker would then lock out every real client, which binds within a round trip.) So the
  descriptors stay free for the connections that matter, and `status` gets in.

After that, boxes are bounded by the protocol's own limits (``BOUND_BOX_BYTES``).
Repeated warnings are throttled: a flood of refused connections is one line per period.
"""

from __future__ import annotations

from typing import Any

from twisted.protocols import policies

from claudepeers.wire import commands as wire

#: Once bound, a box is bounded by the protocol's own limits (the bridge's are the same).
BOUND_BOX_BYTES, BOUND_BOX_KEYS = wire.BOUND_BOX_BYTES, wire.BOUND_BOX_KEYS
#: Before the token (Authenticate, Hello, Ping are tiny) a box has at most this many keys.
UNBOUND_BOX_KEYS = 16
#: A repeated warning (connections refused, boxes dropped) is logged at most this often.
WARN_EVERY_SECONDS = 10.0


class Admission(policies.TimeoutMixin):
    """Mixed into the broker's AMP protocol: the bounds of a connection not yet bound.

    Expects ``factory`` (with ``connections``, ``unbound`` and ``throttle``), ``creds``,
    ``authenticated``, ``bound``, ``closed``, ``broker`` and LeanAMP's box bounds.
    """

    def _admit(self, limits: Any) -> None:
        """Take a place among the listener's unbound connections (the oldest makes room)."""
        factory = getattr(self, "factory", None)
        if factory is not None:
            if len(factory.unbound) >= limits.max_unbound:
                factory.throttle.warn("evicted", (
                    f"closing the oldest of {len(factory.unbound)} connections of this listener that have not "
                    "authenticated or registered yet, to make room (max_unbound, CLAUDE_PEERS_MAX_UNBOUND)"))
                oldest = next(iter(factory.unbound))
                del factory.unbound[oldest]
                if oldest.transport is not None:
                    oldest.transport.abortConnection()
            factory.connections.add(self)
            factory.unbound[self] = None
        self.max_box_bytes, self.max_box_keys = limits.unbound_box_bytes, UNBOUND_BOX_KEYS
        self.setTimeout(limits.unbound_seconds)

    def _trust_boxes(self) -> None:
        self.max_box_bytes, self.max_box_keys = BOUND_BOX_BYTES, BOUND_BOX_KEYS

    def _bind(self) -> None:
        """Authenticated (TCP) or at work (UNIX): no deadline, the protocol's own bounds."""
        self.bound = True
        self.setTimeout(None)
        self._trust_boxes()
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.unbound.pop(self, None)

    def _leave(self) -> None:
        """The connection ended: free its places."""
        self.setTimeout(None)
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connections.discard(self)
            factory.unbound.pop(self, None)

    def timeoutConnection(self) -> None:  # noqa: N802 - TimeoutMixin's name
        """The deadline to authenticate or register passed: drop the connection."""
        verb = "authenticate" if self.creds.transport == "tcp" else "register"
        self._warn("timeout", (
            f"dropping a {self.creds.transport} connection (pid {self.creds.pid}) that did not {verb} within "
            f"{self.broker.limits.unbound_seconds:g} s (unbound_seconds, CLAUDE_PEERS_UNBOUND_SECONDS)"))
        if self.transport is not None:
            self.transport.abortConnection()

    def boxTooLarge(self, what: str) -> None:  # noqa: N802 - LeanAMP's name
        """A box over the bounds: say so in the log (throttled) and drop the connection."""
        where = "before authenticating" if not self.authenticated else "(the protocol's own limit)"
        self._warn("box", f"dropping a {self.creds.transport} connection (pid {self.creds.pid}) that sent {what} {where}")
        if self.transport is not None:
            self.transport.abortConnection()

    def _warn(self, kind: str, text: str) -> None:
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.throttle.warn(kind, text)
        else:
            self.log.warn("{text}", text=text)
