"""The processes and threads around one bridge, read with psutil: its parent, its agent's
terminal, a newer bridge of the same agent session, and the daemon threads it runs blocking
work in (git, starting a broker). Nothing here knows MCP or the broker.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil
from twisted.python.threadpool import ThreadPool

from claudepeers.common import agents


def newer_sibling(agent: agents.AgentProcess | None) -> int | None:
    """The pid of a bridge started after us, with our command line, under the same agent.

    The broker keeps one connection per agent session and drops the older one when a
    newer registers (Claude Code restarts its MCP server at compaction). Reconnecting
    would take the session back and the two would take turns; the older one steps aside.
    """
    if agent is None:
        return None
    try:
        me = psutil.Process()
        mine, started = me.cmdline(), me.create_time()
        for process in psutil.Process(agent.pid).children(recursive=True):
            if process.pid == me.pid:
                continue
            try:
                if process.cmdline() == mine and process.create_time() >= started:
                    return process.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return None


class DaemonThreadPool(ThreadPool):
    """Twisted's thread pool with daemon threads: a worker stuck in git never delays exit."""

    @staticmethod
    def threadFactory(*args: Any, **kwargs: Any) -> threading.Thread:  # noqa: N802 - Twisted's name
        """A daemon thread (ThreadPool's default factory makes them non-daemon)."""
        thread = threading.Thread(*args, **kwargs)
        thread.daemon = True
        return thread


def parent_process() -> tuple[int, float] | None:
    """Our parent's pid and start time (None if it is already gone)."""
    try:
        parent = psutil.Process(os.getppid())
        return parent.pid, parent.create_time()
    except (psutil.Error, OSError):
        return None


def agent_terminal(pid: int) -> str | None:
    """The controlling terminal of the agent, if it has one."""
    try:
        return psutil.Process(pid).terminal()
    except (psutil.Error, OSError):
        return None
