"""The bridge's AMP parser holds the broker's end to the protocol's box bounds."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from claudepeers.bridge.connection import BridgeAMP
from claudepeers.wire import box
from claudepeers.wire import commands as wire


class Link:
    """The little of BrokerLink a BridgeAMP touches before it is registered."""

    log = Logger()

    def lost(self, protocol: Any, reason: Any) -> None:
        """The connection ended."""


def connected() -> tuple[BridgeAMP, StringTransport]:
    """A bridge protocol on an in-memory transport."""
    protocol = BridgeAMP(Link())
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def endless_box(value_bytes: int) -> bytes:
    """More key/value pairs of one box than the bound allows (the box never ends)."""
    pairs = wire.BOUND_BOX_BYTES // (value_bytes + 8) + 2
    return b"".join(box.pair(b"k%d" % index, b"x" * value_bytes) for index in range(pairs))


@pytest.mark.parametrize("value_bytes", [65535, 1])
def test_an_endless_box_from_the_broker_drops_the_connection(value_bytes: int, caplog: Any) -> None:
    """Big values (bytes bound) or tiny ones (keys bound): dropped, nothing kept."""
    protocol, transport = connected()
    data = endless_box(value_bytes)
    for start in range(0, len(data), 1 << 16):
        protocol.dataReceived(data[start:start + (1 << 16)])
    assert transport.disconnecting
    assert protocol._partial_box is None and len(protocol._unparsed) < 1 << 17


def test_a_box_within_the_bounds_is_parsed() -> None:
    """A Ping from the broker's end is answered as before."""
    protocol, transport = connected()
    protocol.dataReceived(box.call_box("Ping", b"1"))
    assert not transport.disconnecting and b"_answer" in transport.value()
