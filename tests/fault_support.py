"""What the fault-injection tests share (``test_faults*.py``, ``test_storage_hostile.py``): stand-in
agent processes, a free TCP port, and registering a raw AMP client for a stand-in or a TCP session.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import psutil

from claudepeers.wire import commands as wire

from raw_amp import RawAMP

#: Generous limits so that a fast sender is never refused for its rate during the kill rounds.
TRAFFIC_ENV = {"CLAUDE_PEERS_MESSAGES_PER_MINUTE": "10000000", "CLAUDE_PEERS_MAX_UNREAD": "1000000"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandIns:
    """Stand-in agent processes (``sleep``), ended by pid afterwards."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self) -> tuple[int, float]:
        """A new live process: (pid, start time)."""
        process = subprocess.Popen(["sleep", "3600"])
        self.processes.append(process)
        return process.pid, psutil.Process(process.pid).create_time()

    def end_all(self) -> None:
        """Kill and reap every stand-in."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


#: The secret each stand-in's first TCP registration received: resuming its peer needs it.
SECRETS: dict[tuple[int, float], str] = {}


def tcp_session(label: str) -> tuple[int, float, str]:
    """A session a TCP client of this process may claim: over TCP the broker accepts only the
    agent whose process tree holds the connection, so this process is the agent, and each
    peer is one thread of it (``label``), as a Codex app-server's threads are."""
    return os.getpid(), psutil.Process().create_time(), label


def register(client: RawAMP, agent: tuple, cwd: str, delivery: str = "none") -> dict[str, Any]:
    """Register ``client`` as the peer of ``agent`` ((pid, start) or, over TCP, a
    :func:`tcp_session`), with its secret once it has one."""
    extra = {"secret": SECRETS[agent]} if agent in SECRETS else {}
    if len(agent) > 2:
        extra["thread_id"] = agent[2]
    answer = client.call(wire.Register, agent_pid=agent[0], agent_start=agent[1], client_type="codex",
                         cwd=cwd, delivery=delivery, **extra)
    SECRETS[agent] = answer.get("secret") or SECRETS.get(agent, "")
    return answer
