"""The person at the keyboard, told apart from an agent (DESIGN 9).

Some commands are for the operator only: the dashboard link (and the approval of an
agent's tool permissions). An agent's shell tool runs as the same user and could run
``claude-peers dashboard`` itself, so the broker refuses these to a process that has an
agent session among its ancestors. The process is the one the kernel names for the
connection (``SO_PEERCRED``), walked up with psutil; nothing the client says counts. A TCP
connection, which the kernel vouches for not at all, is refused too.

Known limit: a process an agent started but that left its tree (a daemon that
double-forked, a job handed to ``at`` or to an already running tmux server) has no agent
above it; the check keeps an agent's ordinary shell commands out, not a determined one.
"""

from __future__ import annotations

from typing import Callable

from claudepeers.broker.records import Credentials
from claudepeers.common import agents
from claudepeers.common.errors import PermissionDenied

#: How to find the nearest agent at or above a pid (tests pass their own process table).
AgentFinder = Callable[[int], "agents.AgentProcess | None"]


def agent_at_or_above(pid: int) -> agents.AgentProcess | None:
    """The agent session ``pid`` is or runs under (nearest first), or None."""
    itself = agents.describe(pid)
    if itself is not None and itself.client_type != "unknown":
        return itself
    return agents.find_agent(pid)


def require_person(creds: Credentials, what: str, find_agent: AgentFinder = agent_at_or_above) -> None:
    """Raise PermissionDenied unless the connection's process runs outside every agent session.

    ``what`` names the refused action in the error ("the dashboard link").
    """
    if creds.transport != "unix":
        raise PermissionDenied(
            f"{what} needs the UNIX socket: over TCP the kernel cannot tell the broker who asks"
        )
    if creds.pid is None or creds.ended:
        raise PermissionDenied(f"{what}: the broker could not see which process asks, so it refuses")
    agent = find_agent(creds.pid)
    if agent is not None:
        command = " ".join(agent.argv[:3]) or agent.client_type
        raise PermissionDenied(
            f"{what} is for the person, not an agent: the asking process (pid {creds.pid}) runs inside "
            f"the agent session pid {agent.pid} ({command}); run it from your own terminal"
        )

