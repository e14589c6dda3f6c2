"""The fast AMP alone: one command's round trip between two LeanAMPs over iosim (no sockets).

    python bench/amp_roundtrip.py

Prints the CPU time per call (process time, 20,000 calls in batches of 100). A figure for
comparing two versions of wire/fastamp.py on one machine, not an absolute number.
"""
from __future__ import annotations

import time

from twisted.protocols import amp
from twisted.test import iosim

from claudepeers.wire import commands as wire
from claudepeers.wire.fastamp import LeanAMP

class Ping(amp.Command):
    """A Send-like command: text, a chunked body, an optional number."""

    arguments = [(b"to", amp.Unicode()), (b"body", wire.BigText()), (b"n", amp.Integer(optional=True))]
    response = [(b"status", amp.Unicode()), (b"id", amp.Integer())]

class Side(LeanAMP):
    """Both ends: answers Ping with a plain value (the broker's common case)."""

    @Ping.responder
    def ping(self, to: str, body: str, n: int | None) -> dict:
        """The answer at once."""
        return {"status": "shown", "id": n or 0}

server, client, pump = iosim.connectedServerAndClient(ServerClass=Side, ClientClass=Side)
N = 20000
done = []
t = time.process_time()
for batch in range(N // 100):
    for i in range(100):
        client.callRemote(Ping, to="peer", body="hello there", n=i).addCallback(done.append)
    pump.flush()
cpu = time.process_time() - t
assert len(done) == N
print(f"{cpu / N * 1e6:.1f} us per call")
