"""The per-session secret files of TCP peers: removed once their agent session has ended.

A bridge that registers over TCP keeps its peer's secret in a 0600 file beside the token
(``common/client.py``, ``tcp_secret_path``), so that a restarted bridge of the same agent
session can resume the peer. Nothing else removes it, so the broker does: at start, the
files of every session that has ended (while it was down, too); while it runs, a TCP
peer's file when the peer is gone and its agent process with it (a Codex app-server's
threads share one file, which stays while the process runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from claudepeers.common import agents
from claudepeers.common.client import TCP_SECRET_NAME, tcp_secret_name


class SecretFiles:
    """The secret files in one directory (the token's), checked against the process table."""

    log = Logger()

    def __init__(self, directory: Path, processes: Any = agents) -> None:
        self._directory = Path(directory)
        self._processes = processes

    def sweep(self) -> int:
        """Remove the files of agent sessions that have ended; how many were removed."""
        try:
            names = os.listdir(self._directory)
        except OSError:
            return 0  # no directory yet: no files
        removed = 0
        for name in names:
            match = TCP_SECRET_NAME.fullmatch(name)
            if match is not None and self._remove_if_ended(int(match[1]), int(match[2]) / 100):
                removed += 1
        if removed:
            self.log.info("removed {n} TCP secret file(s) of ended agent sessions", n=removed)
        return removed

    def forget(self, record: Any) -> None:
        """A TCP peer is gone: remove its session's file unless its agent process still runs."""
        self._remove_if_ended(record.agent_pid, record.agent_start)

    def _remove_if_ended(self, pid: int, start: float) -> bool:
        if self._processes.is_alive(pid, start):
            return False
        path = self._directory / tcp_secret_name(pid, start)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.log.warn("could not remove {path}: {why}", path=str(path), why=exc.strerror)
            return False
        return True
