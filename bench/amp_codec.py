"""A minimal hand-written AMP codec for the benchmarks' load generators (bench-only helper).

The broker benchmark needs clients that speak the real wire (``claudepeers/wire.py``) while
spending as little CPU per message as possible, so that the load generators leave the
machine's cores to the broker they measure. Twisted's AMP builds a ``Command`` argument
parse, a Deferred and several dicts for every box; this module does only the framing:

- a box is a sequence of (2-byte big-endian key length, key, 2-byte big-endian value
  length, value) pairs ended by two zero bytes (an empty key);
- a command carries ``_command`` and, when it wants an answer, ``_ask``; an answer carries
  ``_answer`` (the ask's value), an error carries ``_error``, ``_error_code`` and
  ``_error_description``;
- values are encoded as the wire module declares them: Unicode as UTF-8, Integer as ASCII
  digits, Float as ``str(value)``, Boolean as ``True``/``False``, ``ListOf(x)`` as each
  element prefixed by its 2-byte length, and ``wire.BigText``/``wire.JSONValue`` chunked
  over ``name``, ``name.1``, ``name.2``... (``wire.CHUNK_BYTES`` each).

``Connection`` and ``Poller`` run such connections on non-blocking sockets and one epoll.
Nothing here imports Twisted: it is used in the hot loop of processes that never start a
reactor.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterable

#: AMP's limits (twisted.protocols.amp.MAX_KEY_LENGTH / MAX_VALUE_LENGTH).
MAX_KEY_LENGTH = 0xFF
MAX_VALUE_LENGTH = 0xFFFF
#: Bytes per BigText chunk; the same value as ``claudepeers.wire.CHUNK_BYTES``.
CHUNK_BYTES = 60_000
#: The two zero bytes that end a box.
END = b"\x00\x00"

Box = dict[bytes, bytes]


def pair(key: bytes, value: bytes) -> bytes:
    """One key/value pair of a box, length-prefixed (raises ValueError when too long)."""
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError(f"AMP key of {len(key)} bytes: {key[:40]!r}")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"AMP value of {len(value)} bytes for key {key!r}")
    return len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


def ask_value(ask: bytes) -> bytes:
    """The length-prefixed value of an ``_ask`` or ``_answer`` key."""
    return len(ask).to_bytes(2, "big") + ask


def encode(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole box from its (key, value) pairs, with the terminating empty key."""
    return b"".join(pair(key, value) for key, value in pairs) + END


def big_text(key: bytes, data: bytes) -> list[tuple[bytes, bytes]]:
    """The pairs of a ``wire.BigText`` value: ``key``, ``key.1``, ... of CHUNK_BYTES each."""
    pairs = [(key, data[:CHUNK_BYTES])]
    for index, start in enumerate(range(CHUNK_BYTES, len(data), CHUNK_BYTES), 1):
        pairs.append((key + b"." + str(index).encode(), data[start : start + CHUNK_BYTES]))
    return pairs


def read_big_text(box: Box, key: bytes) -> bytes:
    """Reassemble a ``wire.BigText`` value from its chunks (KeyError when it is absent)."""
    first = box[key]
    if key + b".1" not in box:  # the common case: one chunk
        return first
    parts = [first]
    index = 1
    while (chunk := box.get(key + b"." + str(index).encode())) is not None:
        parts.append(chunk)
        index += 1
    return b"".join(parts)


def list_of(elements: Iterable[bytes]) -> bytes:
    """An ``amp.ListOf`` value from already-encoded elements."""
    return b"".join(len(element).to_bytes(2, "big") + element for element in elements)


def boolean(value: bool) -> bytes:
    """An ``amp.Boolean`` value."""
    return b"True" if value else b"False"


class BoxReader:
    """Incremental parser: feed it what the socket gave, get the complete boxes back."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Box]:
        """Every box completed by ``data``; an incomplete tail is kept for the next call."""
        buf = self._pending + data if self._pending else data
        boxes: list[Box] = []
        size = len(buf)
        pos = 0
        start = 0  # where the box being parsed began: kept (and parsed again) if incomplete
        box: Box = {}
        while pos + 2 <= size:
            key_end = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
            if key_end == pos + 2:  # the empty key: end of box
                boxes.append(box)
                box = {}
                pos = start = key_end
                continue
            if key_end + 2 > size:
                break
            value_end = key_end + 2 + (buf[key_end] << 8 | buf[key_end + 1])
            if value_end > size:
                break
            box[buf[pos + 2 : key_end]] = buf[key_end + 2 : value_end]
            pos = value_end
        self._pending = buf[start:]
        return boxes


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
