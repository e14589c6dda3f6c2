"""PostgreSQL LISTEN on a connection of its own, notifications handed to the reactor (DESIGN 7).

A notification is only a wake-up, never the record: the table is. Notifications sent while
the listener is disconnected are lost, so every (re)connection calls ``on_connect`` once
LISTEN is in place, and the caller reads what it may have missed. Use::

    listener = Listener(dsn, ["cp_host_a"], on_notify, on_connect=catch_up)
    listener.start()
    ...
    yield listener.stop()

``on_notify(channel, payload)``, ``on_connect()`` and ``on_lost(reason)`` run in the reactor
thread. The listening connection is an autocommit psycopg connection in a thread of its own
(a LISTEN connection is idle for hours: it must not hold one of adbapi's pool threads). When
it breaks (the server restarted, the network went away) the thread reconnects with
exponential backoff, from ``backoff[0]`` up to ``backoff[1]`` seconds. TCP keepalives and a
user timeout on both sides (pgnet.py) bound how long a silent network partition goes
unnoticed (libpq ignores them on a UNIX socket, where a dead server closes the connection
at once).

Channel names are SQL identifiers, quoted here: ``pg_notify(channel, payload)`` on the sending
side must use the same (case-sensitive) text, at most 63 bytes.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from claudepeers.broker.storage import pgnet
from claudepeers.common import dsn as dsns

#: How often the listening thread looks up from an idle connection to see whether it must stop.
POLL_SECONDS = 0.2


class Listener:
    """LISTEN on ``channels`` of the database ``dsn``; see the module doc."""

    log = Logger()

    def __init__(self, dsn: str, channels: str | Sequence[str], on_notify: Callable[[str, str], Any],
                 on_connect: Callable[[], Any] | None = None, on_lost: Callable[[str], Any] | None = None,
                 reactor: Any = None, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._dsn = dsn
        self.channels = [channels] if isinstance(channels, str) else list(channels)
        for channel in self.channels:
            if not channel or len(channel.encode()) > 63:
                raise ValueError(f"a LISTEN channel name must have 1 to 63 bytes: {channel!r}")
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_lost = on_lost
        self._reactor = reactor
        self._backoff = backoff
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred | None = None
        #: True while LISTEN is in place (read in the reactor thread; set from the listening one).
        self.connected = False
        #: Connections made so far (the first and every reconnection).
        self.connections = 0
        #: Why the last connection ended or could not be made (password masked), or None.
        self.last_error: str | None = None

    def start(self) -> None:
        """Start listening (returns at once; ``on_connect`` says when LISTEN is in place)."""
        if self._thread is not None:
            raise RuntimeError("this Listener was already started")
        self._stopped = Deferred()
        self._thread = threading.Thread(target=self._run, name=f"claude-peers LISTEN {','.join(self.channels)}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> Deferred:
        """Stop listening; fires (in the reactor thread) once the connection is closed."""
        if self._thread is None or self._stopped is None:
            return succeed(None)
        self._stopping.set()
        return self._stopped

    # --- the listening thread ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff[0]
        try:
            while not self._stopping.is_set():
                listened = self._listen_once()
                if self._stopping.is_set():
                    break
                delay = self._backoff[0] if listened else min(delay * 2, self._backoff[1])
                self._stopping.wait(delay)
        finally:
            self._reactor.callFromThread(self._finished)

    def _listen_once(self) -> bool:
        """One connection: LISTEN, hand over notifications until it breaks or we stop.

        True if LISTEN was in place (the next attempt starts from the shortest backoff).
        """
        import psycopg
        from psycopg import sql

        listened = False
        try:
            options = {**pgnet.client_options(self._dsn), "autocommit": True}
            with psycopg.connect(self._dsn, **options) as connection:
                pgnet.bound_server_side(connection)
                for channel in self.channels:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                listened = True
                self._reactor.callFromThread(self._connected)
                while not self._stopping.is_set():
                    for note in connection.notifies(timeout=POLL_SECONDS):
                        self._reactor.callFromThread(self._deliver, note.channel, note.payload)
                        if self._stopping.is_set():
                            break
        except psycopg.Error as exc:
            self._reactor.callFromThread(self._lost, dsns.scrub(str(exc).strip(), self._dsn), listened)
        return listened

    # --- in the reactor thread -----------------------------------------------------------------

    def _connected(self) -> None:
        self.connected = True
        self.connections += 1
        self.last_error = None
        if self._on_connect is not None:
            self._call(self._on_connect)

    def _deliver(self, channel: str, payload: str) -> None:
        self._call(self._on_notify, channel, payload)

    def _lost(self, reason: str, listened: bool) -> None:
        first = self.connected or self.last_error != reason
        self.connected = False
        self.last_error = reason
        if first:  # one line per cause, not one per backoff attempt
            self.log.warn("LISTEN connection {state}: {reason}; retrying with backoff",
                          state="lost" if listened else "failed", reason=reason)
        if self._on_lost is not None:
            self._call(self._on_lost, reason)

    def _finished(self) -> None:
        self.connected = False
        stopped, self._stopped = self._stopped, None
        if stopped is not None:
            stopped.callback(None)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.log.failure("a LISTEN callback failed")
