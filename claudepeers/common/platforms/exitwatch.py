"""Noticing that the agent process has ended, without polling where the kernel can tell us.

Linux: a pidfd becomes readable when its process exits. macOS (and the BSDs): a kqueue
with an ``EVFILT_PROC``/``NOTE_EXIT`` filter on the pid becomes readable then; a kqueue
descriptor can itself be watched by the reactor like a socket. Where neither exists, or
with the portable paths forced, the pid and its start time are checked once a second.
Each watcher checks liveness once more after it is armed, so a process that ended (or a
pid reused) before that is reported at once.
"""

from __future__ import annotations

import os
import select
from typing import Any, Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

POLL_SECONDS = 1.0

Alive = Callable[[int, float], bool]


@implementer(IReadDescriptor)
class ExitDescriptor:
    """A descriptor that turns readable when the process has exited (a pidfd or a kqueue)."""

    def __init__(
        self,
        reactor: Any,
        fd: int,
        close: Callable[[], None],
        on_exit: Callable[[], None],
        exited: Callable[[], bool] = lambda: True,
    ) -> None:
        self._reactor = reactor
        self._fd = fd
        self._close = close
        self._on_exit = on_exit
        self._exited = exited
        self._fired = False

    def fileno(self) -> int:
        """The watched descriptor (-1 once stopped)."""
        return self._fd

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        """Twisted's name for this reader in logs."""
        return "agent-exit"

    def doRead(self) -> None:  # noqa: N802
        """Readable: the process has exited (a kqueue is asked which event it holds)."""
        if self._exited():
            self.stop()
            self._fire()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        """Removed from the reactor (at shutdown): that says nothing about the process."""

    def stop(self) -> None:
        """Stop watching (the process may still run)."""
        if self._fd >= 0:
            self._reactor.removeReader(self)
            self._close()
            self._fd = -1

    def _fire(self) -> None:
        if not self._fired:
            self._fired = True
            self._on_exit()


def _armed(reactor: Any, watcher: ExitDescriptor, pid: int, start: float, is_alive: Alive) -> ExitDescriptor:
    """Watch from now on, unless the process is already gone (then report it at once)."""
    if not is_alive(pid, start):
        watcher._fd = -1
        watcher._close()
        reactor.callLater(0, watcher._on_exit)
        return watcher
    reactor.addReader(watcher)
    return watcher


def watch_pidfd(reactor: Any, pid: int, start: float, on_exit: Callable[[], None], is_alive: Alive) -> Any:
    """Linux: watch a pidfd; None when pidfds are unavailable."""
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        reactor.callLater(0, on_exit)
        return _Stopped()
    except (AttributeError, OSError):
        return None
    watcher = ExitDescriptor(reactor, fd, lambda: os.close(fd), on_exit)
    return _armed(reactor, watcher, pid, start, is_alive)


def watch_kqueue(
    reactor: Any, pid: int, start: float, on_exit: Callable[[], None], is_alive: Alive, api: Any = select
) -> Any:
    """macOS/BSD: watch a kqueue holding ``NOTE_EXIT`` for ``pid``; None without kqueue.

    ``api`` is the :mod:`select` module (a test passes a recording stand-in).
    """
    if not hasattr(api, "kqueue"):
        return None
    queue = api.kqueue()
    change = api.kevent(
        pid,
        filter=api.KQ_FILTER_PROC,
        flags=api.KQ_EV_ADD | api.KQ_EV_ONESHOT,
        fflags=api.KQ_NOTE_EXIT,
    )
    try:
        queue.control([change], 0, 0)
    except ProcessLookupError:
        # ESRCH: no such process any more.
        queue.close()
        reactor.callLater(0, on_exit)
        return _Stopped()
    except OSError:
        queue.close()
        return None

    def exited() -> bool:
        events = queue.control(None, 4, 0)
        return any(event.fflags & api.KQ_NOTE_EXIT for event in events)

    watcher = ExitDescriptor(reactor, queue.fileno(), queue.close, on_exit, exited)
    return _armed(reactor, watcher, pid, start, is_alive)


def watch_poll(reactor: Any, pid: int, start: float, on_exit: Callable[[], None], is_alive: Alive) -> Any:
    """Anywhere: check the pid and its start time every POLL_SECONDS."""

    def check() -> None:
        if not is_alive(pid, start):
            loop.stop()
            on_exit()

    loop = LoopingCall(check)
    loop.clock = reactor
    loop.start(POLL_SECONDS, now=True)
    return loop


class _Stopped:
    """What a watch of an already-ended process returns: nothing left to stop."""

    def stop(self) -> None:
        """Nothing to do."""


def watch_exit(
    reactor: Any, pid: int, start: float, on_exit: Callable[[], None], is_alive: Alive, portable: bool = False
) -> Any:
    """Call ``on_exit`` once when ``pid`` (started at ``start``) ends; returns an object with ``stop()``.

    The kernel's notice first (pidfd, then kqueue), the poll last; ``portable`` skips
    the pidfd (Linux only), which leaves the poll here and the kqueue on macOS.
    """
    watchers = (watch_kqueue,) if portable else (watch_pidfd, watch_kqueue)
    for watch in watchers:
        watcher = watch(reactor, pid, start, on_exit, is_alive)
        if watcher is not None:
            return watcher
    return watch_poll(reactor, pid, start, on_exit, is_alive)
