"""The event log: what happened in the broker, for `claude-peers log [-f]`.

Recent events live in memory (every message is one); the ones worth keeping across
restarts (registrations, departures, kills, renames, broker start/stop) also go to the
store. Watchers (``log -f`` connections) get each event as it happens.

The history keeps each event's time as a number and formats it only when the event is
read or streamed: most message events are never read.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.logger import Logger

from claudepeers.broker.records import iso
from claudepeers.broker.views import concerns

#: Events kept in memory.
EVENT_HISTORY = 1000
#: Event kinds kept in the database (messages are only in the in-memory history).
PERSISTENT_EVENTS = {"register", "leave", "gone", "kill", "rename", "broker", "dashboard"}


class EventLog:
    """History, persistence and live streaming of broker events."""

    log = Logger()

    def __init__(self, store: Any, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENT_HISTORY)
        self._watchers: set[Any] = set()
        self._sequence = 0

    def load(self, stored: list[dict[str, Any]]) -> None:
        """Start the history with events stored before a restart (oldest first)."""
        for event in stored:
            self._append(dict(event))

    def _append(self, event: dict[str, Any]) -> dict[str, Any]:
        # A sequence number lets a follower tell a new event from one it has seen.
        self._sequence += 1
        event["seq"] = self._sequence
        self._events.append(event)
        return event

    def emit(self, kind: str, peer_id: str | None, detail: str, **extra: Any) -> None:
        """Record an event, keep it in history, persist the important ones, tell watchers."""
        at = self._clock.seconds()
        event = self._append({"at": at, "kind": kind, "peer_id": peer_id, "detail": detail, **extra})
        if kind in PERSISTENT_EVENTS:
            self._store.add_event(at, kind, peer_id, detail).addErrback(
                lambda f: None if getattr(f.value, "reported", False) else self.log.failure("could not store event", f)
            )
        if not self._watchers:
            return
        shown = None
        for watcher in list(self._watchers):
            try:
                if getattr(watcher, "raw_events", False):
                    # The dashboard keeps a few of the many events it gets and formats
                    # only those: it gets the history's own dict (times as numbers), to read.
                    watcher.event(event)
                    continue
                if shown is None:
                    shown = _shown(event)
                watcher.event(shown)
            except Exception:  # a broken watcher must not stop the others
                self.log.failure("watcher failed; dropping it")
                self._watchers.discard(watcher)

    @property
    def watching(self) -> bool:
        """True while anything watches (a ``log -f``, a dashboard page)."""
        return bool(self._watchers)

    def touch(self) -> None:
        """Something watchers show changed without an event (a summary, an unread count):
        tell the watchers that care (the dashboard's stream has ``changed()``)."""
        for watcher in self._watchers:
            changed = getattr(watcher, "changed", None)
            if changed is not None:
                changed()

    def recent(self, limit: int, concerning: str | None = None) -> list[dict[str, Any]]:
        """The latest events, oldest first (times as ISO strings); with ``concerning``, only
        the events about that peer (its own, and messages to it)."""
        limit = max(1, min(limit, EVENT_HISTORY))
        events = list(self._events)
        if concerning is not None:
            events = [event for event in events if concerns(event, concerning)]
        return [_shown(event) for event in events[-limit:]]

    def watch(self, watcher: Any) -> None:
        """Send future events to ``watcher.event(dict)``."""
        self._watchers.add(watcher)

    def unwatch(self, watcher: Any) -> None:
        """Stop sending events to ``watcher``."""
        self._watchers.discard(watcher)


def _shown(event: dict[str, Any]) -> dict[str, Any]:
    """The event as clients see it: a copy with its time as an ISO string."""
    return {**event, "at": iso(event["at"])}
