"""Ending an agent session: SIGTERM, then SIGKILL after a grace period, pid reuse guarded.

The process is named by pid *and* start time: each signal goes through a pidfd checked
against that start time (Linux), else psutil after the same check; its end is the
kernel's notice (pidfd/kqueue, ``platforms.watch_exit``), not a poll.
"""

from __future__ import annotations

import signal
from typing import Any

import psutil
from twisted.internet.defer import Deferred, inlineCallbacks, succeed

from claudepeers.common import platforms
from claudepeers.common.agents import agent_kind, same_start

TERMINATED = "terminated"  # ended on SIGTERM
KILLED = "killed"  # needed SIGKILL
SURVIVED = "survived"  # still running after SIGKILL (uninterruptible sleep?)
ALREADY_GONE = "already-gone"


class NotTheAgent(Exception):
    """The pid no longer names the agent process that registered."""


def check_agent(pid: int, start: float, client_type: str) -> psutil.Process:
    """The live agent process, or NotTheAgent saying why it is not."""
    try:
        proc = psutil.Process(pid)
        actual_start = proc.create_time()
    except psutil.NoSuchProcess:
        raise NotTheAgent(f"pid {pid} no longer exists") from None
    except psutil.AccessDenied:
        raise NotTheAgent(f"pid {pid} belongs to another user") from None
    if not same_start(start, actual_start):
        raise NotTheAgent(f"pid {pid} was reused by another process (it started at a different time)")
    kind = agent_kind(proc)
    if kind is None or kind != client_type:
        raise NotTheAgent(f"pid {pid} is not a {client_type} agent process (it is {proc.name()!r})")
    return proc


class _Exit:
    """The end of one process, noticed by the kernel (``platforms.watch_exit``: a pidfd or a
    kqueue; a poll where neither exists), waited for with a deadline."""

    def __init__(self, reactor: Any, pid: int, start: float) -> None:
        self._reactor = reactor
        self._pid, self._start = pid, start
        self.ended = False
        self._waiters: list[Deferred] = []
        self._watch = platforms.watch_exit(reactor, pid, start, self._exited)

    def _exited(self) -> None:
        self.ended = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(True)

    def within(self, seconds: float) -> Deferred:
        """Fires True once the process has ended, False if it still runs after ``seconds``."""
        if self.ended:
            return succeed(True)
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        # At the deadline, a last look of our own: the poll (where no kernel notice exists)
        # looks only once a second.
        timer = self._reactor.callLater(seconds, lambda: waiter.called or waiter.callback(
            not platforms.is_alive(self._pid, self._start)))
        return waiter.addBoth(lambda ended: (timer.active() and timer.cancel(), ended)[1])

    def stop(self) -> None:
        """Stop watching (a watch that reported the end has stopped itself)."""
        if not self.ended:
            self._watch.stop()


@inlineCallbacks
def terminate(reactor: Any, proc: psutil.Process, grace: float) -> Any:
    """SIGTERM ``proc``, wait up to ``grace`` seconds for its end, then SIGKILL; fires with the outcome.

    Each signal goes to the process that started at ``proc``'s start time, never to a pid
    reused meanwhile (``platforms.send_signal``).
    """
    pid, start = proc.pid, proc.create_time()
    exit_ = _Exit(reactor, pid, start)
    try:
        if not platforms.send_signal(pid, start, signal.SIGTERM):
            return ALREADY_GONE
        if (yield exit_.within(grace)):
            return TERMINATED
        if not platforms.send_signal(pid, start, signal.SIGKILL):
            return TERMINATED
        if (yield exit_.within(2.0)):
            return KILLED
        return SURVIVED
    finally:
        exit_.stop()
