"""Receiving the broker's ``Event`` pushes for ``log -f``.

Events pushed between ``Watch`` and the answer of ``RecentEvents`` are held back, then
printed after the recent ones, skipping any already printed (same event id).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.protocols import amp

from claudepeers.wire import commands as wire


class EventPrinter:
    """Prints each event once, in order, through ``emit``; holds pushes while told to."""

    def __init__(self, emit: Callable[[dict], None]) -> None:
        """``emit`` writes one event to the terminal."""
        self._emit = emit
        self._held: list[dict] | None = None
        self._seen: set[Any] = set()
        self._dedupe = True

    def locator(self) -> amp.CommandLocator:
        """The AMP locator answering the broker's ``Event`` calls on this connection."""
        printer = self

        class Locator(amp.CommandLocator):
            @wire.Event.responder
            def event(self, event: dict) -> dict:
                printer.pushed(event)
                return {}

        return Locator()

    def hold(self) -> None:
        """Buffer pushed events until :meth:`release`."""
        self._held = []

    def release(self) -> None:
        """Print the buffered events (minus those already printed) and stop buffering."""
        held, self._held = self._held or [], None
        for event in held:
            self.emit(event)
        # Only recent-versus-held events can repeat; later pushes are new by construction.
        self._seen.clear()
        self._dedupe = False

    def pushed(self, event: dict) -> None:
        """One event pushed by the broker."""
        if self._held is not None:
            self._held.append(event)
        else:
            self.emit(event)

    def emit(self, event: dict) -> None:
        """Print ``event`` unless an event with the same id was printed already."""
        key = event.get("id", event.get("event_id"))
        if key is None:
            # Events without an id are told apart by their whole content (time included).
            key = json.dumps(event, sort_keys=True, default=str)
        if self._dedupe:
            if key in self._seen:
                return
            self._seen.add(key)
        self._emit(event)


def connection_closed(protocol: amp.AMP) -> Deferred:
    """A Deferred that fires (with None) when the broker closes ``protocol``'s connection."""
    done: Deferred = Deferred()
    original = protocol.connectionLost

    def connection_lost(reason: Any) -> None:
        original(reason)
        if not done.called:
            done.callback(None)

    protocol.connectionLost = connection_lost  # type: ignore[method-assign]
    return done
