"""The claims of an agent session: is the claimed agent the connecting process's, and are
the claim's fields well formed? Pure checks (the kernel's credentials in, an error out),
used by registration and attachment in :mod:`.core`.
"""

from __future__ import annotations

import os
from typing import Any

from claudepeers.broker import containers, naming
from claudepeers.broker.records import Claim, Credentials
from claudepeers.common import agents
from claudepeers.common.errors import IdentityRejected, InvalidArgument, LimitExceeded

CLIENT_TYPES = ("claude-code", "codex", "unknown")
#: ``none``: a hook or the CLI, which take no pushes; anything else describes a bridge's path.
NO_PUSHES = "none"
#: The longest delivery description a bridge may give (it is shown in one line of a table).
MAX_DELIVERY_CHARS = 200


def verify_session(processes: Any, creds: Credentials, agent_pid: int, agent_start: float) -> tuple[int, float]:
    """Check a claimed agent session against the kernel's view; IdentityRejected if not.

    The claim must come from the process that opened the connection: its start time,
    read when the broker accepted it, must still be the start time of its pid. A claim
    from another pid namespace (a container sharing the run directory) is read in that
    namespace (containers.py). Returns the session as this broker's namespace numbers it:
    (agent pid, agent start). ``processes`` reads the process table
    (:mod:`claudepeers.common.agents`, or a test's stand-in).
    """
    if agent_pid <= 0:
        # psutil raises ValueError for these: it would reach the caller as an internal error.
        raise InvalidArgument(f"agent_pid must be a positive process id, not {agent_pid}")
    if creds.transport == "unix" and creds.pid is not None:
        translated = containers.in_broker_namespace(creds.pid, agent_pid)
        if translated is not None:
            start = agents.process_start(translated)
            if start is None:
                raise IdentityRejected(f"the claimed agent (pid {translated} out here) has ended")
            agent_pid, agent_start = translated, start
    if agent_pid == 1 or agent_pid == os.getpid():
        raise IdentityRejected(f"pid {agent_pid} is {'init' if agent_pid == 1 else 'the broker'}, not an agent session")
    if creds.transport == "unix":
        if creds.ended:
            raise IdentityRejected(
                f"the process that opened this connection (pid {creds.pid}) had ended before the broker "
                "accepted it (or could not be confirmed then)"
            )
        if creds.start is not None and not processes.is_alive(creds.pid, creds.start):
            raise IdentityRejected(
                f"the process that opened this connection (pid {creds.pid}) has ended; "
                "its pid may now belong to another process"
            )
    if not processes.is_alive(agent_pid, agent_start):
        raise IdentityRejected(
            f"agent pid {agent_pid} with start time {agent_start} is not a running process"
        )
    if creds.transport == "unix":
        if creds.pid is None or not processes.is_ancestor(agent_pid, creds.pid):
            raise IdentityRejected(
                f"pid {agent_pid} is not an ancestor of the connecting process (pid {creds.pid})"
            )
    elif creds.address is not None and not processes.holds_connection(agent_pid, creds.address):
        # Else a TCP client could take a local agent's session before that agent's bridge does.
        raise IdentityRejected(f"no process of agent pid {agent_pid}'s session holds this TCP connection: "
                               "over TCP a client may claim only the agent session it runs in")
    return agent_pid, agent_start


def check_claim(claim: Claim) -> None:
    """InvalidArgument or LimitExceeded for a claim whose fields break a rule; None if it is fine."""
    if claim.client_type not in CLIENT_TYPES:
        raise InvalidArgument(f"client_type must be one of {', '.join(CLIENT_TYPES)}, not {claim.client_type!r}")
    check_delivery(claim.delivery)
    if claim.thread_id is not None and not naming.THREAD_ID.fullmatch(claim.thread_id):
        raise InvalidArgument(f"thread_id must be 1 to 64 letters, digits and ._:- characters, not {claim.thread_id!r}")
    if not claim.cwd or not claim.cwd.startswith("/"):
        raise InvalidArgument(f"cwd must be an absolute path, not {claim.cwd!r}")
    for label, value in (("cwd", claim.cwd), ("git_root", claim.git_root),
                         ("git_common_dir", claim.git_common_dir), ("branch", claim.branch), ("tty", claim.tty),
                         ("repo_id", claim.repo_id)):
        if value is not None and len(value) > 4096:
            raise LimitExceeded(f"{label} is longer than 4096 characters")
        if value is not None and "\x00" in value:
            raise InvalidArgument(f"{label} contains a NUL character (U+0000)")


def check_delivery(delivery: str) -> str:
    """A delivery description a bridge may give, or InvalidArgument saying what is wrong."""
    if not isinstance(delivery, str) or not delivery.strip():
        raise InvalidArgument("delivery must describe how the agent gets its mail (e.g. 'inline'), not be empty")
    if len(delivery) > MAX_DELIVERY_CHARS or not delivery.isprintable():
        raise InvalidArgument(f"delivery must be at most {MAX_DELIVERY_CHARS} printable characters")
    return delivery
