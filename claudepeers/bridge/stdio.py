"""Line-framed stdin and stdout for the MCP session, on the reactor, without threads.

The SDK's ``stdio_server()`` reads stdin in a worker thread that blocks in ``readline()``
(the process then hangs at exit) and writes every line through another thread. Here both
ends are non-blocking descriptors watched by the reactor:

- :class:`LineReader` calls back once per line and once at end of file;
- :class:`LineWriter` writes a line straight into the pipe when it can (so a line counts as
  delivered to the agent as soon as ``write`` returns True) and buffers the rest; lines
  that need no such promise (tool answers) may wait for the end of the reactor turn and
  go out together (``write_soon``): one system call for a burst's worth of answers.

Before either is created, :func:`claim_stdout` moves the real stdout to a private
descriptor and points fd 1 at stderr, so a stray ``print`` can never corrupt the protocol.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable

from twisted.internet import fdesc
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

#: A single JSON-RPC line longer than this is refused (the agent misbehaves). The longest
#: body the wire carries (8 MiB) fits, JSON-escaped, with room to spare.
MAX_LINE_BYTES = 16 * 1024 * 1024


def claim_stdout() -> int:
    """Return a private descriptor for the protocol; fd 1 goes to stderr from now on."""
    private = os.dup(1)
    os.set_inheritable(private, False)
    os.dup2(2, 1)
    return private


@implementer(IReadDescriptor)
class LineReader:
    """Reads lines from a descriptor on the reactor; ``on_eof`` once at the end."""

    def __init__(
        self,
        reactor: Any,
        fd: int,
        on_line: Callable[[bytes], None],
        on_eof: Callable[[], None],
        pending: bytes = b"",
        on_too_long: Callable[[], None] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_line = on_line
        self._on_eof = on_eof
        self._on_too_long = on_too_long
        self._pending = pending
        # An incomplete line, as the reads brought it (never a newline in it): joined once
        # its end comes, so a long line costs linear time, not a copy per read.
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._discarding = False  # inside a line too long to keep, until its newline
        self._ended = False
        fdesc.setNonBlocking(fd)

    def start(self) -> None:
        """Deliver lines already buffered, then watch the descriptor."""
        pending, self._pending = self._pending, b""
        self._data(pending)
        try:
            self._reactor.addReader(self)
        except OSError:
            # A regular file or /dev/null cannot be polled (EPERM): read it all now.
            self._reactor.callLater(0, self._read_to_end)

    def _read_to_end(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break
            self._data(chunk)
        self._finish()

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "stdin"

    def doRead(self) -> Any:  # noqa: N802
        return fdesc.readFromFD(self._fd, self._data)

    def _data(self, data: bytes) -> None:
        if b"\n" not in data:
            self._hold(data)
            return
        # One split per read: a read holds hundreds of lines in a burst, and taking
        # them off the front one at a time copied the rest of the buffer each time.
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._discarding:
            self._discarding = False
            lines[0] = b""  # the end of a line already refused
        elif self._held:
            self._held.append(lines[0])
            lines[0] = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
        for line in lines:
            if len(line) > MAX_LINE_BYTES:
                self._on_too_long()
            elif line.strip():
                self._on_line(line)
        self._hold(tail)

    def _hold(self, data: bytes) -> None:
        """Keep the start of a line; past the bound, refuse it once and skip to its end."""
        if self._discarding or not data:
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > MAX_LINE_BYTES:
            self._held.clear()
            self._held_bytes = 0
            self._discarding = True
            self._on_too_long()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """End of file (or an error): hand over a last unterminated line, then say so."""
        self._reactor.removeReader(self)
        self._finish()

    def _finish(self) -> None:
        if self._ended:
            return
        self._ended = True
        line = b"".join(self._held)
        self._held.clear()
        if line.strip() and not self._discarding:
            self._on_line(line)
        self._on_eof()


@implementer(IWriteDescriptor)
class LineWriter:
    """Writes whole lines to a non-blocking descriptor, buffering what the pipe refuses."""

    def __init__(self, reactor: Any, fd: int, on_broken: Callable[[], None] = lambda: None) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_broken = on_broken
        self._pending = bytearray()
        self._soon: list[bytes] = []  # write_soon's lines, written at the end of this turn
        self._watching = False
        self._drain_waiters: list[Deferred] = []
        self.broken = False
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802
        return "stdout"

    @property
    def pending(self) -> int:
        """Bytes accepted but not yet in the pipe."""
        return len(self._pending) + sum(len(line) for line in self._soon)

    def drained(self) -> Deferred:
        """Fires with True once everything accepted is in the pipe (False if it broke)."""
        if self._soon:
            self.write(b"")
        if not self._pending or self.broken:
            return succeed(not self.broken)
        waiter: Deferred = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def _fire_drained(self, result: bool) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(result)

    def write_soon(self, data: bytes) -> None:
        """Write ``data`` at the end of this reactor turn, with the others written so."""
        if self.broken:
            return
        if not self._soon:
            self._reactor.callLater(0, self._write_soon_lines)
        self._soon.append(data)

    def _write_soon_lines(self) -> None:
        if self._soon:
            self.write(b"")

    def write(self, data: bytes) -> bool:
        """Queue ``data``; True when all of it is in the pipe already."""
        if self.broken:
            return False
        if self._soon:
            # Lines waiting for the end of the turn go first: the order stays as written.
            self._soon.append(data)
            data = b"".join(self._soon)
            self._soon.clear()
        if not self._pending:
            written = self._write_some(data)
            if written == len(data):
                return True
            data = data[written:]
        self._pending += data
        if not self._watching and not self.broken:
            self._watching = True
            self._reactor.addWriter(self)
        return False

    def _write_some(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except InterruptedError:
            return 0
        except OSError as error:
            if error.errno in (errno.EPIPE, errno.EBADF, errno.EINVAL):
                self._break()
                return 0
            raise

    def doWrite(self) -> None:  # noqa: N802
        written = self._write_some(self._pending)
        del self._pending[:written]
        if not self._pending and self._watching:
            self._watching = False
            self._reactor.removeWriter(self)
            self._fire_drained(True)

    def flush_blocking(self, timeout: float = 0.5) -> None:
        """At exit: push out what is left, waiting at most ``timeout`` for the reader."""
        import select
        import time

        if self._soon:
            self.write(b"")
        deadline = time.monotonic() + timeout
        while self._pending and not self.broken:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([], [self._fd], [], left)
            written = self._write_some(self._pending)
            del self._pending[:written]

    def _break(self) -> None:
        self.broken = True
        self._pending.clear()
        self._soon.clear()
        if self._watching:
            self._watching = False
            self._reactor.removeWriter(self)
        self._fire_drained(False)
        self._on_broken()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if not self.broken:
            self._break()
