"""Noticing that our agent has gone: :func:`claudepeers.common.platforms.watch_exit`, :class:`HangupWatch`.

The kernel tells us where it can (a pidfd on Linux, a kqueue ``NOTE_EXIT`` on macOS);
elsewhere the pid and its start time are checked once a second. The bridge watches its
agent and its parent this way (a parent that ends leaves us re-parented, whether or not an
agent was recognised), and its stdout with :class:`HangupWatch`.
"""

from __future__ import annotations

import os
import select
import stat
from typing import Any, Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from claudepeers.common import platforms
from claudepeers.common.platforms.exitwatch import POLL_SECONDS

__all__ = ["POLL_SECONDS", "HangupWatch", "watch_exit"]


def watch_exit(reactor: Any, pid: int, start: float, on_exit: Callable[[], None]) -> Any:
    """Call ``on_exit`` once when process ``pid`` (started at ``start``) ends.

    Returns an object with ``stop()``. A process already gone is reported at once.
    """
    return platforms.watch_exit(reactor, pid, start, on_exit)


@implementer(IReadDescriptor)
class HangupWatch:
    """Calls ``on_hangup`` once the reader of our stdout (a pipe or socket) has gone.

    A pipe's write end is never readable; the kernel reports POLLERR on it (and POLLHUP on
    a socket) once the other end is closed, which the reactor delivers as readable. So a
    bridge notices a closed stdout even while it has nothing to write.
    """

    def __init__(self, reactor: Any, fd: int, on_hangup: Callable[[], None]) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_hangup = on_hangup

    @classmethod
    def applies_to(cls, fd: int) -> bool:
        """Only pipes and sockets can be watched (a file or tty is never "readable" so)."""
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

    def start(self) -> None:
        """Begin watching."""
        self._reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "stdout-hangup"

    def doRead(self) -> None:  # noqa: N802
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        hung_up = any(events & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _fd, events in poller.poll(0))
        self._reactor.removeReader(self)
        if hung_up:
            self._on_hangup()
        # else: data came back on a socket stdout (not MCP's way); stop watching, never spin

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """Removed at shutdown: says nothing about the reader."""
