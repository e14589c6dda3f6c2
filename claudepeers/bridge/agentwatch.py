"""Noticing that our agent process has ended, without polling where the kernel can tell us.

On Linux a pidfd becomes readable when its process exits; the reactor watches it like a
socket. Elsewhere (or when pidfds are unavailable) we check the pid and its start time
once a second.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from claudepeers import agents

POLL_SECONDS = 1.0


@implementer(IReadDescriptor)
class _ExitDescriptor:
    """A pidfd: readable once the process has exited."""

    def __init__(self, reactor: Any, fd: int, on_exit: Callable[[], None]) -> None:
        self._reactor = reactor
        self._fd = fd
        self._on_exit = on_exit
        self._fired = False

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "agent-exit"

    def doRead(self) -> None:  # noqa: N802
        self.stop()
        self._fire()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """Removed from the reactor (at shutdown): that says nothing about the process."""

    def stop(self) -> None:
        """Stop watching (the process may still run)."""
        if self._fd >= 0:
            self._reactor.removeReader(self)
            os.close(self._fd)
            self._fd = -1

    def _fire(self) -> None:
        if not self._fired:
            self._fired = True
            self._on_exit()


def watch_exit(reactor: Any, pid: int, start: float, on_exit: Callable[[], None]) -> Any:
    """Call ``on_exit`` once when process ``pid`` (started at ``start``) ends.

    Returns an object with ``stop()``. A process already gone is reported at once.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return _poll(reactor, pid, start, on_exit)
    watcher = _ExitDescriptor(reactor, fd, on_exit)
    # Checked after opening, so a pid reused in between is noticed too.
    if not agents.is_alive(pid, start):
        watcher.stop()
        reactor.callLater(0, on_exit)
        return watcher
    reactor.addReader(watcher)
    return watcher


def _poll(reactor: Any, pid: int, start: float, on_exit: Callable[[], None]) -> Any:
    def check() -> None:
        if not agents.is_alive(pid, start):
            loop.stop()
            on_exit()

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(POLL_SECONDS, now=True)
    return loop
