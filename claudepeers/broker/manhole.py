"""The manhole: a live Python shell inside the running broker, on a 0600 UNIX socket.

The protocol is conch's Manhole over an insults terminal, spoken straight over the
socket (no SSH, no telnet): ``claude-peers manhole`` relays the operator's terminal in
raw mode. The namespace is built per connection from the live objects (buildbot's
habit), so it always shows the current broker and actors.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.conch import manhole
from twisted.conch.insults import insults
from twisted.internet.protocol import Factory


def manhole_factory(namespace: Callable[[], dict[str, Any]]) -> Factory:
    """A factory serving a colored Python shell whose globals come from ``namespace()``."""

    def build() -> insults.ServerProtocol:
        return insults.ServerProtocol(manhole.ColoredManhole, namespace())

    return Factory.forProtocol(build)
