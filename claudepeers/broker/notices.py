"""LISTEN on a PostgreSQL connection of its own, with every notification handed to the reactor.

A notification is a wake-up, never the record (DESIGN 7): it is lost while the connection
is down, so ``on_connected`` runs after every (re)connect and its owner reads what it may
have missed. The connection lives on one thread of its own that blocks in psycopg's
``notifies()`` (half a second at a time, so that a stop is prompt); after a failure it
retries with a pause that doubles from 0.5 s to 30 s.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

MAX_BACKOFF_SECONDS = 30.0
#: How long one wait for notifications lasts before the loop looks at its stop flag.
POLL_SECONDS = 0.5


class Listener:
    """Listens on ``channels`` and calls ``on_notice(channel, payload)`` on the reactor."""

    log = Logger()

    def __init__(self, dsn: str, channels: Iterable[str], reactor: Any,
                 on_notice: Callable[[str, str], Any], on_connected: Callable[[], Any],
                 on_lost: Callable[[str], Any], connect: Callable[..., Any] | None = None,
                 name: str = "claude-peers listener") -> None:
        self._dsn = dsn
        self._channels = list(channels)
        self._reactor = reactor
        self._on_notice = on_notice
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._connect = connect or _connect
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def start(self) -> None:
        """Start listening (in the background; ``on_connected`` says when it is)."""
        self._thread = threading.Thread(target=self._thd_loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> Deferred:
        """Stop and wait for the thread to end."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return threads.deferToThread(lambda: None)
        return threads.deferToThread(thread.join, 10)

    def _thd_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                conn = self._conn = self._connect(self._dsn, application_name=self._name[:63])
                try:
                    for name in self._channels:
                        conn.execute(f"LISTEN {_quoted(name)}")
                    failures = 0
                    self._reactor.callFromThread(self._on_connected)
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=POLL_SECONDS):
                            self._reactor.callFromThread(self._on_notice, notice.channel, notice.payload)
                finally:
                    self._conn = None
                    try:
                        conn.close()
                    except Exception:  # a broken connection: nothing to close
                        pass
            except Exception as exc:  # any failure of the database or the network: retry
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (failures - 1))
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self._reactor.callFromThread(self._on_lost, f"{text}; retrying in {delay:g} s")
                self._stop.wait(delay)


def _quoted(name: str) -> str:
    """A channel name as a quoted identifier (host names are checked: no quotes in them)."""
    return '"' + name.replace('"', '""') + '"'


def _connect(dsn: str, application_name: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, application_name=application_name, connect_timeout=5)
