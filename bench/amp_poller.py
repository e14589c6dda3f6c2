"""The benchmarks' load generators' event loop: AMP connections on non-blocking sockets, one epoll.

The broker benchmark needs clients that speak the real wire (``claudepeers/wire/commands.py``) while
spending as little CPU per message as possible, so that the load generators leave the
machine's cores to the broker they measure: Twisted's AMP builds a ``Command`` argument
parse, a Deferred and several dicts for every box. Boxes are framed and parsed by
:mod:`claudepeers.wire.box`, the project's one Twisted-free codec; this module only moves
bytes. Nothing here imports Twisted.
"""

from __future__ import annotations

import select
import socket

from claudepeers.wire.box import Box, BoxReader

class Connection:
    """One AMP connection on a non-blocking socket: parser, output queue, ask counter."""

    __slots__ = ("sock", "fd", "reader", "out", "queued", "writing", "asks", "lost")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = BoxReader()
        self.out: list[bytes] = []  # boxes queued this loop turn, written together
        self.queued = False  # listed in the Poller's dirty list
        self.writing = False  # registered for EPOLLOUT (the socket buffer was full)
        self.asks = 0
        self.lost = False

    def next_ask(self) -> bytes:
        """A fresh ``_ask`` value (unique on this connection), in hex like Twisted's."""
        self.asks += 1
        return b"%x" % self.asks


class Poller:
    """An epoll loop over AMP connections; subclasses handle the boxes.

    Boxes queued during a turn go out in one ``send()`` per connection at its end, so the
    answers to a pushed batch and the next commands share a system call on both sides.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.connections: dict[int, Connection] = {}
        self.dirty: list[Connection] = []

    def add(self, conn: Connection) -> None:
        """Watch ``conn`` for boxes."""
        self.connections[conn.fd] = conn
        self.epoll.register(conn.fd, select.EPOLLIN)

    def watch(self, fd: int) -> None:
        """Watch another descriptor; ``fd_readable`` is called when it has data."""
        self.epoll.register(fd, select.EPOLLIN)

    def queue(self, conn: Connection, box: bytes) -> None:
        """Write ``box`` at the end of this turn."""
        conn.out.append(box)
        if not conn.queued:
            conn.queued = True
            self.dirty.append(conn)

    def turn(self, timeout: float | None) -> None:
        """Wait for data (or ``timeout`` seconds), handle it, write what was queued."""
        readable = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
        for fd, mask in self.epoll.poll(-1 if timeout is None else timeout):
            conn = self.connections.get(fd)
            if conn is None:
                self.fd_readable(fd)
                continue
            if mask & select.EPOLLOUT and not conn.queued:
                conn.queued = True
                self.dirty.append(conn)
            if mask & readable and not conn.lost:
                self._read(conn)
        self.timers()
        self.flush()

    def flush(self) -> None:
        """One ``send()`` per connection for everything queued to it."""
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.queued = False
            if conn.lost or not conn.out:
                continue
            data = conn.out[0] if len(conn.out) == 1 else b"".join(conn.out)
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lose(conn)
                continue
            conn.out = [data[sent:]] if sent < len(data) else []
            if bool(conn.out) != conn.writing:  # wait for room only while something is left
                conn.writing = bool(conn.out)
                self.epoll.modify(conn.fd, select.EPOLLIN | (select.EPOLLOUT if conn.writing else 0))

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)  # recv() allocates this much each call, then shrinks it
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lose(conn)
            return
        for box in conn.reader.feed(data):
            self.box_received(conn, box)

    def _lose(self, conn: Connection) -> None:
        if conn.lost:
            return
        conn.lost = True
        self.epoll.unregister(conn.fd)
        del self.connections[conn.fd]
        conn.sock.close()
        self.connection_lost(conn)

    # --- for subclasses ------------------------------------------------------------------

    def box_received(self, conn: Connection, box: Box) -> None:
        """A complete box arrived on ``conn``."""
        raise NotImplementedError

    def connection_lost(self, conn: Connection) -> None:
        """The other side closed ``conn`` (or it failed)."""

    def fd_readable(self, fd: int) -> None:
        """A descriptor given to ``watch`` has data."""

    def timers(self) -> None:
        """Called once per turn, after the boxes that arrived were handled."""
