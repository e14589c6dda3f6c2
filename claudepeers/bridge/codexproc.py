"""The Codex processes around a bridge: the ``codex`` binary, its home, the TUIs in use.

Interactive Codex runs every thread of a CODEX_HOME in one background ``codex app-server``
(``$CODEX_HOME/packages/app-server-daemon/...``); the TUIs are its clients, not its
parents, and it outlives them. The bridge of one thread uses these facts to run ``codex
queue`` with the same binary and home as its app-server, and to tell whether a person is
still at the TUI that shows its thread (a queued turn in a thread nobody looks at runs
unseen). The daemon says which TUI that is (:mod:`.codexdaemon`: the port of the TUI's own
MCP server attached to the thread); the TUI is the process of this user that listens there.
All of it is blocking work: callers run it off the reactor thread.
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
    """How to run ``codex`` like the agent process, and the TUI processes seen at binding.

    ``exact``: ``tuis`` is the one TUI that shows our thread (the daemon said so), or empty
    when no TUI shows it any more; otherwise ``tuis`` is every TUI of the home, any of which
    may show it (an old Codex, or the daemon could not be asked).
    """

    binary: str
    env: dict[str, str]
    tuis: tuple[tuple[int, float], ...]
    exact: bool = False

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


def listening_on(port: int, candidates: tuple[tuple[int, float], ...]) -> tuple[int, float] | None:
    """The candidate process (pid, start) that listens on localhost TCP ``port``, if any."""
    for pid, start in candidates:
        try:
            connections = psutil.Process(pid).net_connections("tcp")
        except (psutil.Error, OSError):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections):
            return (pid, start) if agents.is_alive(pid, start) else None
    return None


def thread_tuis(agent: agents.AgentProcess, home: str, thread_id: str | None,
                tuis: tuple[tuple[int, float], ...]) -> tuple[tuple[tuple[int, float], ...], bool]:
    """Narrow ``tuis`` to the one showing ``thread_id``: (tuis, exact).

    Exact only when the daemon named the thread's TUI port: then the result is the TUI
    listening there, or nothing (the person left; the port's TUI is gone). Anything the
    daemon cannot say leaves every TUI of the home, as before.
    """
    if agent.subcommand != "app-server" or not thread_id:
        return tuis, agent.subcommand != "app-server"
    # Imported here: only a Codex bridge asks the daemon (in a thread), so no other bridge
    # pays wsproto's import (about 12 ms of a bridge's start).
    from claudepeers.bridge import codexdaemon

    try:
        port = codexdaemon.thread_tui_port(home, thread_id)
    except codexdaemon.DaemonError:
        return tuis, False
    if port is None:
        return tuis, False
    found = listening_on(port, tuis)
    return ((found,) if found is not None else ()), True


def host_of(agent: agents.AgentProcess, thread_id: str | None = None) -> CodexHost | None:
    """What waking this agent's thread needs, or None when its ``codex`` cannot be found."""
    binary = codex_binary(agent)
    if binary is None:
        return None
    environ = _environ(agent.pid)
    home = codex_home(environ, binary)
    env = {"HOME": environ.get("HOME") or os.path.expanduser("~"), "CODEX_HOME": home,
           "PATH": environ.get("PATH") or os.environ.get("PATH", "/usr/bin:/bin")}
    tuis, exact = thread_tuis(agent, home, thread_id, tuis_of(agent, home))
    return CodexHost(binary, env, tuis, exact)
