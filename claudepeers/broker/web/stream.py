"""Server-sent events: the broker's events pushed to every open page, coalesced.

Costs nothing while no page is open: the stream watches the broker's event log only while
at least one page is connected (the log skips all watcher work without watchers), and
its one timer runs only when something happened since the last write. With pages open,
events gather for FLUSH_SECONDS and go out as one write per page: a few flow lines (at
most MAX_FLOW_PER_FLUSH; the page is told how many more there were), other events, and
the peers and health once, whatever the number of messages. The write is encoded once and
the same bytes go to every page.

A page that reads slower than the broker writes (a hidden tab, a stopped browser) pauses
its connection (Twisted's producer protocol): it gets nothing until it drains, then one
fresh ``state`` instead of what it missed, so a stalled page costs a bounded buffer.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from claudepeers.broker.web import views

#: How long events gather before one write to every page.
FLUSH_SECONDS = 0.1
#: Flow lines sent per write at most; the rest are counted (the page shows "N more").
MAX_FLOW_PER_FLUSH = 25
#: Pages one broker serves at once (a newcomer closes the oldest).
MAX_PAGES = 16


def sse(event: str, data: Any) -> bytes:
    """One server-sent event (JSON has no raw newlines, so one ``data:`` line)."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


@implementer(IPushProducer)
class Page:
    """One connected page (an open ``/api/events`` request)."""

    def __init__(self, request: Any, stream: "EventStream") -> None:
        self.request = request
        self._stream = stream
        self.paused = False
        self.stale = False

    def write(self, data: bytes) -> None:
        """Send ``data``, unless the page is paused (then it will get a fresh state)."""
        if self.paused:
            self.stale = True
        else:
            self.request.write(data)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        """The page's buffer is full: stop writing to it."""
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        """Drained: send the present state if anything was skipped."""
        self.paused = False
        if self.stale:
            self.stale = False
            self._stream.send_state(self)

    def stopProducing(self) -> None:  # noqa: N802
        """The connection is going away."""
        self._stream.remove(self)


class EventStream:
    """The set of open pages and the coalesced writes to them."""

    log = Logger()

    def __init__(self, broker: Any, clock: Any, flush_seconds: float = FLUSH_SECONDS) -> None:
        """``clock``: callLater (the reactor, or a Clock in tests)."""
        self._broker = broker
        self._clock = clock
        self._flush_seconds = flush_seconds
        self.pages: dict[Page, None] = {}
        self._flow: list[dict[str, Any]] = []
        self._skipped = 0
        self._other: list[dict[str, Any]] = []
        self._timer: Any = None
        self._last_peers = b""
        self._last_signature: list[Any] = []
        self._peer_views = views.PeerViews()

    # --- pages ------------------------------------------------------------------------

    def add(self, request: Any) -> Page:
        """Start streaming to ``request`` (headers already set): a state first, then updates."""
        page = Page(request, self)
        if not self.pages:
            self._broker.events.watch(self)
        self.pages[page] = None
        while len(self.pages) > MAX_PAGES:
            oldest = next(iter(self.pages))
            self.remove(oldest)
            oldest.request.finish()
        request.registerProducer(page, True)
        request.notifyFinish().addBoth(lambda _: self.remove(page))
        request.write(b"retry: 2000\n\n")
        self.send_state(page)
        return page

    def remove(self, page: Page) -> None:
        """Stop streaming to ``page``; with the last one gone, stop watching altogether."""
        if page not in self.pages:
            return
        del self.pages[page]
        if not self.pages:
            self._broker.events.unwatch(self)
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._flow, self._other, self._skipped = [], [], 0
            self._last_peers, self._last_signature = b"", []

    def send_state(self, page: Page) -> Deferred:
        """Send ``page`` everything the page shows now."""

        def send(state: dict[str, Any]) -> None:
            if page in self.pages:
                page.write(sse("state", state))

        return views.state_view(self._broker).addCallback(send).addErrback(
            lambda failure: self.log.failure("dashboard state failed", failure))

    def close(self) -> None:
        """End every page's stream (the dashboard stops)."""
        for page in list(self.pages):
            self.remove(page)
            page.request.unregisterProducer()
            page.request.finish()

    # --- what the broker tells us -----------------------------------------------------------

    #: The event log hands us its own event dicts (time as a number), not formatted copies.
    raw_events = True

    def event(self, event: dict[str, Any]) -> None:
        """An event of the broker's log (called for every one while a page is open); read,
        never changed: it is the log's own dict."""
        if event.get("kind") == "message":
            if len(self._flow) < MAX_FLOW_PER_FLUSH:
                self._flow.append(event)
            else:
                self._skipped += 1
        else:
            self._other.append(event)
        if self._timer is None:
            self._timer = self._clock.callLater(self._flush_seconds, self._flush)

    def changed(self) -> None:
        """Something shown changed without an event (a summary, an unread count)."""
        if self._timer is None and self.pages:
            self._timer = self._clock.callLater(self._flush_seconds, self._flush)

    def _flush(self) -> None:
        self._timer = None
        flow, self._flow = self._flow, []
        other, self._other = self._other, []
        skipped, self._skipped = self._skipped, 0
        broker = self._broker
        try:
            parts = []
            if flow or skipped:
                parts.append(sse("flow", {"items": [views.flow_item(broker, views.shown(e)) for e in flow],
                                          "skipped": skipped}))
            if other:
                parts.append(sse("log", {"items": [views.log_item(views.shown(e)) for e in other]}))
            signature = [(a.record, a.unread, a.delivery) for a in broker.actors.values()]
            if other or signature != self._last_signature:  # unchanged peers are not sent again
                self._last_signature = signature
                peers = sse("peers", {"peers": views.peers_view(broker, self._peer_views)})
                if peers != self._last_peers:
                    self._last_peers = peers
                    parts.append(peers)
            parts.append(sse("health", {"health": views.health_view(broker)}))
            self._write(b"".join(parts))
            if any(e.get("kind") == "kill" for e in other):
                views.kills_view(broker).addCallback(lambda kills: self._write(sse("kills", {"kills": kills}))).addErrback(
                    lambda failure: self.log.failure("dashboard kill audit failed", failure))
        except Exception:  # a page must never break the broker's event log
            self.log.failure("dashboard update failed")

    def _write(self, data: bytes) -> None:
        for page in list(self.pages):
            page.write(data)
