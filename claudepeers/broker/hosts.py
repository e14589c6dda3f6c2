"""This broker as one host of a network of brokers that share a PostgreSQL database (DESIGN 7).

Each broker is one host, named by ``CLAUDE_PEERS_HOST`` (default: the machine's hostname).
On a connection of its own (never the store's pool, whose connections come and go) it
holds a PostgreSQL advisory lock keyed by its host name, so that a second broker with the
same name is refused with the holder's address, and it beats a heartbeat into the
``brokers`` table. Everything on that connection runs on one thread of its own.

A host whose heartbeat is older than ``unreachable_after`` seconds (by the database's
clock, so that the hosts' clocks need not agree) is shown as unreachable, and so are its
peers: their agents may be fine, only their broker cannot be heard.

When the database goes away the heartbeat retries with a growing pause (0.5 s doubling to
30 s) and ``state`` says so in one line; when it is back the lock is taken again. If
another broker took the host name meanwhile, this broker stops (two brokers must never
speak for one host).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Mapping

from twisted.internet import threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

#: A host name: letters, digits and ``.-_``, at most 40 (it is part of a NOTIFY channel name).
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
HEARTBEAT_SECONDS = 2.0
#: Missed heartbeats before a host counts as unreachable.
UNREACHABLE_BEATS = 3
MAX_BACKOFF_SECONDS = 30.0

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


class HostNameError(ValueError):
    """CLAUDE_PEERS_HOST is not a usable host name."""


class HostTaken(Exception):
    """Another broker holds this host name; the message names its address."""


def host_name(environ: Mapping[str, str] | None = None) -> str:
    """This broker's host name: ``CLAUDE_PEERS_HOST``, else the hostname (cut to a valid name)."""
    environ = os.environ if environ is None else environ
    wanted = (environ.get("CLAUDE_PEERS_HOST") or "").strip()
    if wanted:
        if not HOST_NAME.fullmatch(wanted):
            raise HostNameError(
                f"CLAUDE_PEERS_HOST must be 1 to 40 letters, digits and . - _ (starting with a letter or digit), "
                f"not {wanted!r}"
            )
        return wanted
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:40].strip("-._")
    return name or "localhost"


#: The first half of every claude-peers advisory lock key ("cp"; pgdatabase's schema lock is
#: (LOCK_CLASS, 1)); a host's lock is (LOCK_CLASS, a hash of its name).
LOCK_CLASS = 0x6370


def lock_key(host: str) -> tuple[int, int]:
    """The advisory lock key of a host name: (LOCK_CLASS, a signed 32-bit hash, never 0 or 1)."""
    digest = hashlib.sha256(f"claude-peers host {host}".encode()).digest()
    objid = int.from_bytes(digest[:4], "big", signed=True)
    return LOCK_CLASS, objid if objid not in (0, 1) else objid + 2


def channel(host: str) -> str:
    """The NOTIFY channel a host's broker listens on."""
    return f"claude_peers:{host}"


@dataclass(frozen=True)
class HostInfo:
    """One broker of the network as the ``brokers`` table says."""

    host: str
    address: str
    pid: int
    version: str
    started_at: float
    heartbeat_age: float
    reachable: bool

    def to_wire(self, peers: int, is_self: bool) -> dict[str, Any]:
        """The JSON form in ``status``."""
        return {"host": self.host, "address": self.address, "pid": self.pid, "version": self.version,
                "heartbeat_age": round(self.heartbeat_age, 3), "reachable": self.reachable,
                "stopped": self.pid == 0,
                "peers": peers, "self": is_self}


class HostRegistration:
    """The lock, the ``brokers`` row and the heartbeat of this host."""

    log = Logger()

    def __init__(self, dsn: str, host: str, version: str, reactor: Any, *,
                 address: str | None = None, heartbeat: float = HEARTBEAT_SECONDS,
                 connect: Callable[..., Any] | None = None, on_lost_host: Callable[[str], Any] | None = None) -> None:
        self._dsn = dsn
        self.host = host
        self.version = version
        self.address = address or f"pid {os.getpid()} on {socket.gethostname()}"
        self._reactor = reactor
        self.heartbeat = heartbeat
        self.unreachable_after = heartbeat * UNREACHABLE_BEATS
        self._connect = connect or _psycopg_connect
        self._on_lost_host = on_lost_host
        self._pool = ThreadPool(1, 1, name=f"claude-peers host {host}")
        self._conn: Any = None
        self._timer: Any = None
        self._failures = 0
        self._stopping = False
        self._installed = False
        self.started_at: float | None = None
        #: The latest view of every host (this one included), by name.
        self.hosts: dict[str, HostInfo] = {}
        #: One line for status and doctor: "connected", or what is wrong and when the next try is.
        self.state = "connecting"
        self.connected = False
        #: Called on the reactor with the host list after every heartbeat that reached the database.
        self.on_beat: Callable[[dict[str, HostInfo]], Any] | None = None

    # --- start and stop -------------------------------------------------------------------

    def _run(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        return threads.deferToThreadPool(self._reactor, self._pool, fn, *args)

    @inlineCallbacks
    def start(self) -> Any:
        """Take the host's lock and write its row; HostTaken (naming the holder) if another has it."""
        self._pool.start()
        try:
            self.hosts = yield self._run(self._thd_take)
        except BaseException:
            yield self._run(self._thd_close)
            self._pool.stop()
            raise
        self.connected = True
        self.state = "connected"
        self._schedule(self.heartbeat)

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop beating and close the connection (which releases the lock)."""
        self._stopping = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        try:
            yield self._run(self._thd_call, self._thd_stopped)
        except Exception:  # the database is away: the row keeps its last heartbeat
            pass
        yield self._run(self._thd_close)
        self._pool.stop()

    def _thd_stopped(self, conn: Any) -> None:
        # pid 0: shut down on purpose (shown as stopped), not lost (its heartbeat just ages).
        conn.execute("UPDATE brokers SET pid = 0 WHERE host = %s AND pid = %s", (self.host, os.getpid()))
        # Released now, not when the server notices the closed connection: a broker started
        # right after this one stopped must not find the host name still taken.
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key(self.host))

    # --- the dedicated connection (its one thread) ---------------------------------------

    def _thd_take(self) -> dict[str, HostInfo]:
        conn = self._conn = self._connect(self._dsn, application_name=f"claude-peers {self.host}"[:63])
        # Heartbeats and notifications need no flush to disk before the commit returns (a lost
        # one is covered: by the next beat, by the reader's deadline); kill requests ask for it.
        conn.execute("SET synchronous_commit = off")
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(self.host)).fetchone()
        if not row[0]:
            mine = conn.execute("SELECT pid, address FROM brokers WHERE host = %s", (self.host,)).fetchone()
            if self.started_at is not None and mine is not None and tuple(mine) == (os.getpid(), self.address):
                # Back after a partition: the server has not yet noticed that our old
                # connection is dead, and it still holds our lock. Wait for it to drop it.
                self._thd_close()
                raise ConnectionError("this broker's previous connection still holds the host's lock")
            holder = self._thd_holder(conn)
            self._thd_close()
            raise HostTaken(
                f"another broker already runs as host {self.host!r} of this database ({holder}); "
                "give each broker its own CLAUDE_PEERS_HOST"
            )
        if not self._installed:
            self._thd_install(conn)
            self._installed = True
        started = conn.execute(f"SELECT {_NOW}").fetchone()[0]
        self.started_at = self.started_at or float(started)
        conn.execute(
            "INSERT INTO brokers (host, address, pid, version, started_at, heartbeat_at) "
            f"VALUES (%s, %s, %s, %s, %s, {_NOW}) ON CONFLICT (host) DO UPDATE SET address = EXCLUDED.address, "
            "pid = EXCLUDED.pid, version = EXCLUDED.version, started_at = EXCLUDED.started_at, "
            "heartbeat_at = EXCLUDED.heartbeat_at",
            (self.host, self.address, os.getpid(), self.version, self.started_at),
        )
        return self._thd_hosts(conn)

    def _thd_holder(self, conn: Any) -> str:
        """The address of the broker holding this host's lock, as well as the database knows it."""
        row = conn.execute("SELECT address, {now} - heartbeat_at FROM brokers WHERE host = %s".format(now=_NOW),
                           (self.host,)).fetchone()
        classid, objid = lock_key(self.host)
        backend = conn.execute(
            "SELECT a.client_addr, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s",
            (classid, objid & 0xFFFFFFFF),
        ).fetchone()
        words = []
        if row is not None:
            words.append(f"{row[0]}, heartbeat {float(row[1]):.1f} s ago")
        if backend is not None:
            words.append(f"connected from {backend[0] or 'the local socket'}")
        return "; ".join(words) or "its address is not recorded"

    def _thd_hosts(self, conn: Any) -> dict[str, HostInfo]:
        rows = conn.execute(
            f"SELECT host, address, pid, version, started_at, {_NOW} - heartbeat_at FROM brokers ORDER BY host"
        ).fetchall()
        return {
            row[0]: HostInfo(row[0], row[1], int(row[2]), row[3], float(row[4]), float(row[5]),
                             float(row[5]) <= self.unreachable_after and int(row[2]) != 0)
            for row in rows
        }

    def _thd_beat(self) -> dict[str, HostInfo]:
        if self._conn is None or self._conn.closed:
            return self._thd_take()  # back after an outage: the lock again first
        self._conn.execute(f"UPDATE brokers SET heartbeat_at = {_NOW} WHERE host = %s", (self.host,))
        return self._thd_hosts(self._conn)

    def _thd_notify(self, notices: list[tuple[str, str]]) -> None:
        # One statement and one commit for the lot: a commit that notifies waits for its WAL
        # flush, and one per message would cap a host at a few hundred outcomes a second.
        self._thd_call(lambda conn: conn.execute(
            "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) AS t(c, p)",
            ([c for c, _ in notices], [p for _, p in notices])))

    def _thd_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._conn is None or self._conn.closed:
            raise ConnectionError("not connected to the database")
        return fn(self._conn, *args)

    def _thd_install(self, conn: Any) -> None:
        """The notifications' triggers (storage/network.sql: PostgreSQL only, beside the schema
        files, which hold both engines' tables), installed by one broker at a time."""
        script = resources.files("claudepeers.broker.storage").joinpath("network.sql").read_text("utf-8")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 1)", (LOCK_CLASS,))
            conn.execute(script)

    def _thd_close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to release
                pass

    # --- the heartbeat -------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if not self._stopping:
            self._timer = self._reactor.callLater(delay, self._beat)

    def _beat(self) -> None:
        d = self._run(self._thd_beat)
        d.addCallbacks(self._beaten, self._beat_failed)

    def _beaten(self, hosts: dict[str, HostInfo]) -> None:
        if self._failures:
            self.log.info("host {host}: the database is reachable again", host=self.host)
        self._failures = 0
        self.hosts = hosts
        self.connected = True
        self.state = "connected"
        if self.on_beat is not None:
            self.on_beat(hosts)
        self._schedule(self.heartbeat)

    def _beat_failed(self, failure: Any) -> None:
        if failure.check(HostTaken):
            self.state = f"stopped: {failure.getErrorMessage()}"
            self.log.critical("host {host}: {why}", host=self.host, why=failure.getErrorMessage())
            if self._on_lost_host is not None:
                self._on_lost_host(failure.getErrorMessage())
            return
        self._run(self._thd_close)
        self._failures += 1
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (self._failures - 1))
        cause = failure.getErrorMessage().strip().splitlines()[0] if failure.getErrorMessage().strip() else "?"
        self.connected = False
        self.state = f"database unreachable ({cause}); retrying in {delay:g} s"
        if self._failures == 1 or delay >= MAX_BACKOFF_SECONDS:
            self.log.warn("host {host}: {state}", host=self.host, state=self.state)
        self._schedule(delay)

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        """``fn(connection, *args)`` on this host's connection and thread (autocommit: ``fn``
        opens a transaction where it needs one); fails while the database is away."""
        return self._run(self._thd_call, fn, *args)

    def notify(self, notices: list[tuple[str, str]]) -> Deferred:
        """``pg_notify`` each (channel, payload) on this host's connection, in one transaction
        (delivered at its commit)."""
        return self._run(self._thd_notify, notices)

    def refresh(self) -> Deferred:
        """Read every host's row now, between heartbeats (a host that joined since the last
        beat is known at once, not unreachable for a beat); fails while the database is away."""
        d = self._run(self._thd_call, self._thd_hosts)
        d.addCallback(self._refreshed)
        return d

    def _refreshed(self, hosts: dict[str, HostInfo]) -> dict[str, HostInfo]:
        self.hosts = hosts
        return hosts

    def reachable(self, host: str) -> bool:
        """Whether ``host``'s heartbeat is fresh (this host: whether we reach the database)."""
        if host == self.host:
            return self.connected
        info = self.hosts.get(host)
        return info is not None and info.reachable and self.connected


def _psycopg_connect(dsn: str, application_name: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, application_name=application_name, connect_timeout=5)
