"""Helpers for the dashboard tests: plain HTTP requests (Twisted's Agent) and an SSE reader.

Requests set their own Host, Origin and Cookie headers, so that the tests can send what a
foreign page or a rebound DNS name would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class Body:
    """A request body given at once."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred:  # noqa: N802 - Twisted's interface
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


@dataclass
class Answer:
    """An HTTP answer: status, headers (lower-case names), body."""

    code: int
    headers: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


@inlineCallbacks
def request(url: str, method: bytes = b"GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> Any:
    """One request (no redirects followed); fires with an :class:`Answer`."""
    raw = Headers({name: [value] for name, value in (headers or {}).items()})
    response = yield Agent(reactor).request(method, url.encode(), raw, Body(body) if body is not None else None)
    collector = EventReader(raw=True)
    response.deliverBody(collector)
    yield collector.closed
    data = collector.data
    names = {name.decode().lower(): [v.decode() for v in values] for name, values in response.headers.getAllRawHeaders()}
    return Answer(response.code, names, data)


def cookie_of(answer: Answer) -> str:
    """The ``name=value`` part of the answer's Set-Cookie."""
    return (answer.header("set-cookie") or "").split(";")[0]


class EventReader(Protocol):
    """Collects server-sent events of one streaming answer; fires waiters by event name."""

    def __init__(self, raw: bool = False) -> None:
        """With ``raw`` it only keeps the bytes (a plain answer's body, in ``data``)."""
        self.raw = raw
        self.data = b""
        self.events: list[tuple[str, Any]] = []
        self._buffer = b""
        self._waiters: list[tuple[str, int, Deferred]] = []
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.raw:
            self.data += data
            return
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            name, payload = "message", None
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    name = line[7:].decode()
                elif line.startswith(b"data: "):
                    payload = json.loads(line[6:])
            if payload is not None:
                self.events.append((name, payload))
        self._check()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if not self.closed.called:
            self.closed.callback(None)

    def close(self) -> Deferred:
        """Close the stream as a page that goes away does; fires once it is closed."""
        self.transport.stopProducing()
        return self.closed

    def named(self, name: str) -> list[Any]:
        """The payloads of every event called ``name`` so far."""
        return [payload for event, payload in self.events if event == name]

    def wait_for(self, name: str, count: int = 1) -> Deferred:
        """Fires with the payloads once ``count`` events called ``name`` have arrived."""
        d: Deferred = Deferred()
        self._waiters.append((name, count, d))
        self._check()
        return d

    def _check(self) -> None:
        for waiter in list(self._waiters):
            name, count, d = waiter
            if len(self.named(name)) >= count:
                self._waiters.remove(waiter)
                d.callback(self.named(name))


@inlineCallbacks
def open_stream(url: str, headers: dict[str, str]) -> Any:
    """Open ``/api/events``; fires with (response, reader)."""
    raw = Headers({name: [value] for name, value in headers.items()})
    response = yield Agent(reactor).request(b"GET", url.encode(), raw)
    reader = EventReader()
    response.deliverBody(reader)
    return response, reader


@inlineCallbacks
def until(condition: Any, timeout: float = 5.0) -> Any:
    """Wait (bounded) until ``condition()`` holds: for the other end of a socket to notice
    something, which nothing here can subscribe to."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        yield task.deferLater(reactor, 0.01, lambda: None)
