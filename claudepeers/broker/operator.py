"""Is the person asking, or an agent? The one check before an approval (or a dashboard link).

An agent's shell tool runs as the same user as the person, so it can run ``claude-peers
approve`` or open the dashboard link itself; the uid proves nothing. What the broker can
see is the kernel's pid of the connecting process (SO_PEERCRED, read at accept) and that
process's ancestors. A request is refused when, walking up from that pid:

- a process is an agent by name (``claude``, ``codex``: :func:`claudepeers.common.agents.agent_kind`);
- a process is the agent process of a peer the broker knows (pid and start time), whatever
  its name (a wrapper, a stand-in);
- a process's environment says an agent started it (``CLAUDECODE=1`` is set by Claude Code
  for every command it runs, ``CODEX_THREAD_ID``/``CODEX_SANDBOX*`` by Codex);
- the connecting process was re-parented to init (a double fork is how a process leaves its
  agent's tree: the person's terminal never does that);
- or the connection is TCP, or the kernel could not name the process: nobody vouches.

This is a guard against an agent answering its own (or a colleague's) prompt by accident or
by a prompt injection, not a sandbox: a same-user process that hides well enough (a tmux
session of its own, say) is indistinguishable from the person's terminal.

:func:`refusal` is the pure decision (a process table can be injected); :func:`require_operator`
is what the broker's responders (and the dashboard) call.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import psutil

from claudepeers.common import agents
from claudepeers.common.errors import PermissionDenied

#: Environment variables an agent sets for the commands it runs (name -> whose).
AGENT_ENVIRONMENT = {
    "CLAUDECODE": "Claude Code",
    "CLAUDE_CODE_ENTRYPOINT": "Claude Code",
    "CODEX_THREAD_ID": "Codex",
    "CODEX_SANDBOX": "Codex",
    "CODEX_SANDBOX_NETWORK_DISABLED": "Codex",
}
#: How far up the tree to look (a person's terminal is a handful of levels deep).
MAX_ANCESTORS = 64


class ProcessTable(Protocol):
    """What :func:`refusal` asks about processes (psutil by default; a fake in tests)."""

    def chain(self, pid: int) -> list[dict[str, Any]]:
        """``pid`` and its ancestors, nearest first: dicts with pid, ppid, start, name, kind, environ."""
        ...


class LiveProcesses:
    """The real process table, through psutil."""

    def chain(self, pid: int) -> list[dict[str, Any]]:
        """``pid`` and its ancestors up to (not including) init, nearest first."""
        found: list[dict[str, Any]] = []
        try:
            proc: psutil.Process | None = psutil.Process(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            return found
        while proc is not None and proc.pid > 1 and len(found) < MAX_ANCESTORS:
            try:
                with proc.oneshot():
                    entry = {"pid": proc.pid, "ppid": proc.ppid(), "start": proc.create_time(),
                             "name": proc.name(), "kind": agents.agent_kind(proc), "environ": _environ(proc)}
                found.append(entry)
                proc = proc.parent()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                break
            except psutil.AccessDenied:  # another user's ancestor (sshd, login): nothing more to learn
                break
        return found


def _environ(proc: psutil.Process) -> dict[str, str]:
    """The marker variables of a process's environment (only ours are readable: same uid)."""
    try:
        environ = proc.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
        return {}
    return {name: environ[name] for name in AGENT_ENVIRONMENT if environ.get(name)}


def refusal(
    transport: str,
    pid: int | None,
    known_agents: Iterable[tuple[int, float, str]] = (),
    processes: ProcessTable | None = None,
) -> str | None:
    """Why the process ``pid`` (the kernel's pid of a connection) may not act as the person,
    or None when nothing says it is not the person.

    ``known_agents`` are the registered peers' agent processes: (pid, start time, peer name).
    """
    if transport != "unix":
        return "over TCP the kernel cannot say which process is asking; use the UNIX socket, from your own terminal"
    if pid is None:
        return "the kernel did not say which process is asking"
    chain = (processes or LiveProcesses()).chain(pid)
    if not chain:
        return f"the asking process (pid {pid}) could not be looked at (it has ended?)"
    known = list(known_agents)
    for index, entry in enumerate(chain):
        who = "the asking process" if index == 0 else "its ancestor"
        label = f"{who} {entry['name']} (pid {entry['pid']})"
        if entry.get("kind"):
            kind = "Claude Code" if entry["kind"] == "claude-code" else "Codex"
            return f"{label} is an agent ({kind}): only the person may answer, from a terminal of their own"
        for agent_pid, agent_start, name in known:
            if entry["pid"] == agent_pid and agents.same_start(agent_start, entry["start"]):
                return f"{label} is the agent process of peer {name}: only the person may answer"
        environ = entry.get("environ") or {}
        for variable in AGENT_ENVIRONMENT:
            if environ.get(variable):
                return (f"{label} was started by an agent ({AGENT_ENVIRONMENT[variable]}: {variable} is set in "
                        "its environment): only the person may answer, from a terminal of their own")
    if chain[0]["ppid"] == 1:
        return (f"the asking process (pid {pid}) was detached from the process that started it (its parent is "
                "init): run the command from your terminal")
    return None


def describe(pid: int | None, processes: ProcessTable | None = None) -> str:
    """The asking process in a few words for the audit: ``pid 123 (claude-peers < bash < tmux: server)``."""
    if pid is None:
        return "an unknown process"
    chain = (processes or LiveProcesses()).chain(pid)
    names = " < ".join(str(entry["name"]) for entry in chain[:4])
    return f"pid {pid} ({names})" if names else f"pid {pid}"


def require_operator(broker: Any, creds: Any, action: str, processes: ProcessTable | None = None) -> str:
    """Check that the person (not an agent) asks for ``action`` on the connection of ``creds``;
    PermissionDenied saying why not. Returns the asker's description for the audit.

    ``broker`` supplies the registered peers (``broker.actors``); ``creds`` the kernel's view
    of the connection (transport and pid). The dashboard calls this before it hands out a link.
    """
    known = [(actor.record.agent_pid, actor.record.agent_start, actor.name)
             for actor in getattr(broker, "actors", {}).values() if actor.state != "gone"]
    why = refusal(creds.transport, creds.pid, known, processes)
    if why is not None:
        raise PermissionDenied(f"refusing to {action}: {why}")
    return describe(creds.pid, processes)
