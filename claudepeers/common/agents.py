"""Agent processes: finding the ``claude``/``codex`` session above a process, and checking it.

A peer is an agent session, keyed by the agent process and its start time (DESIGN 4).
The bridge's direct parent is often a wrapper (``sh -c``, ``npx``, ``uv run``), so we walk
up the ancestors and match the process name and the basenames of ``argv[:2]``.
Both the bridge (to claim) and the broker (to check the claim) use these functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from claudepeers.common import platforms
from claudepeers.common.platforms import processes

#: Agent kinds we recognise, by process/argv basename.
AGENT_NAMES = {"claude": "claude-code", "codex": "codex"}
#: How far up the tree to look; agents are a few wrappers away at most.
MAX_DEPTH = 12


@dataclass(frozen=True)
class AgentProcess:
    """An agent session's process: pid, start time (psutil create_time) and kind."""

    pid: int
    start: float
    client_type: str  # "claude-code", "codex" or "unknown"
    argv: tuple[str, ...] = ()

    @property
    def subcommand(self) -> str | None:
        """The word after the program in argv (``exec``, ``app-server``), or None."""
        for index, arg in enumerate(self.argv[:2]):
            if os.path.basename(arg) in AGENT_NAMES:
                following = self.argv[index + 1 : index + 2]
                return following[0] if following and not following[0].startswith("-") else None
        return None

    @property
    def runs_threads(self) -> bool:
        """True for a Codex process that runs several sessions (threads): the interactive
        TUI's background app-server, or a TUI started with ``--no-daemon``. Not ``codex
        exec``, one process per session."""
        return self.client_type == "codex" and (self.subcommand == "app-server" or "--no-daemon" in self.argv)

    def channels_enabled(self, server_name: str) -> bool:
        """True when Claude Code was started with the channels flag naming this server."""
        wanted = f"server:{server_name}"
        argv = list(self.argv)
        for index, arg in enumerate(argv):
            for flag in ("--dangerously-load-development-channels", "--channels"):
                if arg == flag:
                    following = argv[index + 1 : index + 2]
                    if following and wanted in following[0].replace(",", " ").split():
                        return True
                elif arg.startswith(flag + "="):
                    if wanted in arg.split("=", 1)[1].replace(",", " ").split():
                        return True
        return False


def agent_kind(proc: psutil.Process) -> str | None:
    """The agent kind of one process, or None when it is not an agent."""
    try:
        names = [proc.name()]
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    names += [os.path.basename(arg) for arg in cmdline[:2]]
    for name in names:
        kind = AGENT_NAMES.get(name)
        if kind is not None:
            return kind
    return None


def find_agent(pid: int) -> AgentProcess | None:
    """The nearest agent ancestor of ``pid`` (not ``pid`` itself), or None."""
    try:
        for proc in psutil.Process(pid).parents()[:MAX_DEPTH]:
            if proc.pid <= 1:
                break
            kind = agent_kind(proc)
            if kind is not None:
                return AgentProcess(proc.pid, proc.create_time(), kind, tuple(proc.cmdline()))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return None


def describe(pid: int) -> AgentProcess | None:
    """The process ``pid`` as an AgentProcess (kind 'unknown' when not an agent), or None."""
    try:
        proc = psutil.Process(pid)
        return AgentProcess(pid, proc.create_time(), agent_kind(proc) or "unknown", tuple(proc.cmdline()))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def session_of(pid: int) -> AgentProcess | None:
    """The agent session ``pid`` belongs to: its agent ancestor, else its parent process.

    Without an agent above us (a bare terminal, a test), the parent process stands for
    the session, so that a restart of ours under the same parent keeps the same peer.
    """
    agent = find_agent(pid)
    if agent is not None:
        return agent
    try:
        parent = psutil.Process(pid).parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if parent is None:
        return None
    return describe(parent.pid)


def is_ancestor(ancestor_pid: int, pid: int) -> bool:
    """True when ``ancestor_pid`` is ``pid`` or one of its ancestors."""
    try:
        proc = psutil.Process(pid)  # a pid that names no process is nobody's descendant
        return pid == ancestor_pid or any(parent.pid == ancestor_pid for parent in proc.parents()[: MAX_DEPTH + 4])
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


#: The most processes of a claimed agent's tree whose sockets a TCP claim looks at.
MAX_TREE_FOR_TCP = 256


def holds_connection(root_pid: int, address: tuple[str, int]) -> bool:
    """True when ``root_pid`` or a process under it has a TCP socket bound to ``address``:
    the client's end of a loopback connection the broker accepted. (The kernel does not
    vouch for TCP as SO_PEERCRED does, but it does say which process holds a socket.)"""
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    # An agent session is a handful of processes; a claim of a whole desktop's tree is not
    # worth a look at every socket of it (each claim would cost the broker that much).
    for proc in tree[:MAX_TREE_FOR_TCP]:
        try:
            if any(tuple(conn.laddr or ()) == address for conn in proc.net_connections(kind="tcp")):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return False


def same_start(recorded: float, actual: float) -> bool:
    """Start times match at psutil's coarsest resolution (Linux: 1/100 s)."""
    return processes.same_start(recorded, actual)


def is_alive(pid: int, start: float) -> bool:
    """True when ``pid`` runs and is the same process that started at ``start``.

    A reused pid (a different start time) counts as dead; so does a zombie. The broker
    checks every peer's agent every 10 s; :mod:`claudepeers.common.platforms` reads
    ``/proc/<pid>/stat`` once on Linux and asks psutil elsewhere.
    """
    return platforms.is_alive(pid, start)


def is_running(pid: int) -> bool:
    """True when some process ``pid`` runs (not a zombie), whatever its start time."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
def process_start(pid: int) -> float | None:
    """The start time of the running process ``pid``, or None when none runs (a zombie counts
    as ended)."""
    return processes.process_start(pid)