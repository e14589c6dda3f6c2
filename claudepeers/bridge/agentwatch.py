"""Noticing that our agent process has ended: :func:`claudepeers.platforms.watch_exit`.

The kernel tells us where it can (a pidfd on Linux, a kqueue ``NOTE_EXIT`` on macOS);
elsewhere the pid and its start time are checked once a second.
"""

from __future__ import annotations

from typing import Any, Callable

from claudepeers import platforms
from claudepeers.platforms.exitwatch import POLL_SECONDS

__all__ = ["POLL_SECONDS", "watch_exit"]


def watch_exit(reactor: Any, pid: int, start: float, on_exit: Callable[[], None]) -> Any:
    """Call ``on_exit`` once when process ``pid`` (started at ``start``) ends.

    Returns an object with ``stop()``. A process already gone is reported at once.
    """
    return platforms.watch_exit(reactor, pid, start, on_exit)
