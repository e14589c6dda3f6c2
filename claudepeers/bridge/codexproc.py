"""The Codex processes around a bridge: the ``codex`` binary, its home, the TUIs in use.

Interactive Codex runs every thread of a CODEX_HOME in one background ``codex app-server``
(``$CODEX_HOME/packages/app-server-daemon/...``); the TUIs are its clients, not its
parents, and it outlives them. The bridge of one thread uses these facts to run ``codex
queue`` with the same binary and home as its app-server, and to tell whether a person is
still at a TUI of that home (a queued turn in a thread nobody looks at runs unseen).
All of it is blocking psutil work: callers run it off the reactor thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from claudepeers.common import agents

#: Where the daemon's own copy of Codex lives under CODEX_HOME.
DAEMON_DIR = os.sep + os.path.join("packages", "app-server-daemon") + os.sep
#: Subcommands that are not a person's TUI.
NOT_A_TUI = {"exec", "e", "app-server", "queue", "mcp", "mcp-server", "login", "logout", "completion"}


@dataclass(frozen=True)
class CodexHost:
    """How to run ``codex`` like the agent process, and the TUI processes seen at binding."""

    binary: str
    env: dict[str, str]
    tuis: tuple[tuple[int, float], ...]

    def person_present(self) -> bool:
        """True while one of the TUIs seen when the thread was bound still runs."""
        return any(agents.is_alive(pid, start) for pid, start in self.tuis)


def codex_binary(agent: agents.AgentProcess) -> str | None:
    """The executable of the agent's ``codex`` (the app-server's own copy), if runnable."""
    for arg in agent.argv[:2]:
        if os.path.basename(arg) == "codex" and os.path.isabs(arg) and os.access(arg, os.X_OK):
            return arg
    try:
        exe = psutil.Process(agent.pid).exe()
    except (psutil.Error, OSError):
        return None
    return exe if os.path.basename(exe) == "codex" else None


def codex_home(environ: dict[str, str], binary: str | None) -> str:
    """The CODEX_HOME of a Codex process: its environment, its daemon path, or ~/.codex."""
    if environ.get("CODEX_HOME"):
        return environ["CODEX_HOME"]
    if binary and DAEMON_DIR in binary:
        return binary.split(DAEMON_DIR, 1)[0]
    return os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".codex")


def _environ(pid: int) -> dict[str, str]:
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def tuis_of(agent: agents.AgentProcess, home: str) -> tuple[tuple[int, float], ...]:
    """The Codex TUI processes (pid, start) of this user that use CODEX_HOME ``home``.

    A TUI started with ``--no-daemon`` is the agent itself. Otherwise any TUI of the same
    home may be the one showing our thread (nothing in the process table says which).
    """
    if agent.subcommand != "app-server":
        return ((agent.pid, agent.start),)
    found = []
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid or proc.pid == agent.pid:
                continue
            described = agents.describe(proc.pid)
            if described is None or described.client_type != "codex" or described.subcommand in NOT_A_TUI:
                continue
            environ = _environ(proc.pid)
            if codex_home(environ, None) == home:
                found.append((described.pid, described.start))
        except (psutil.Error, OSError):
            continue
    return tuple(found)


def host_of(agent: agents.AgentProcess) -> CodexHost | None:
    """What waking this agent's threads needs, or None when its ``codex`` cannot be found."""
    binary = codex_binary(agent)
    if binary is None:
        return None
    environ = _environ(agent.pid)
    home = codex_home(environ, binary)
    env = {"HOME": environ.get("HOME") or os.path.expanduser("~"), "CODEX_HOME": home,
           "PATH": environ.get("PATH") or os.environ.get("PATH", "/usr/bin:/bin")}
    return CodexHost(binary, env, tuis_of(agent, home))
