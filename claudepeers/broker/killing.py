"""Ending an agent session: SIGTERM, then SIGKILL after a grace period, pid reuse guarded.

The process is named by pid *and* start time; psutil refuses to signal a pid whose
start time changed (a reused pid), and we check again before each signal.
"""

from __future__ import annotations

from typing import Any

import psutil
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

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


def _ended(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@inlineCallbacks
def terminate(reactor: Any, proc: psutil.Process, grace: float, poll: float = 0.05) -> Any:
    """SIGTERM ``proc``, wait up to ``grace`` seconds, then SIGKILL; fires with the outcome."""
    try:
        proc.terminate()
    except psutil.NoSuchProcess:
        return ALREADY_GONE
    waited = 0.0
    while waited < grace:
        yield deferLater(reactor, poll, lambda: None)
        waited += poll
        if _ended(proc):
            return TERMINATED
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return TERMINATED
    for _ in range(int(2.0 / poll)):
        yield deferLater(reactor, poll, lambda: None)
        if _ended(proc):
            return KILLED
    return SURVIVED


