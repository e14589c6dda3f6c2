"""Claims from containers: a pid a bridge names is read in the pid namespace it was made in.

A container that mounts the host's run directory reaches the host's broker (DESIGN 7).
The kernel gives the broker the connecting process's pid in the broker's own namespace
(SO_PEERCRED translates it), but the bridge claims its agent by the pid it sees: a pid of
the container's namespace. That number means nothing out here (or names another
process), so it must never decide: the broker walks up from the connecting process in
its own namespace and takes the ancestor whose pid *in the connecting process's
namespace* is the claimed one. No such ancestor: the claim is refused, whatever process
the number would name out here.
"""

from __future__ import annotations

import os

import psutil

from claudepeers.common.platforms import namespaces
from claudepeers.common.errors import IdentityRejected

#: How far up from the connecting process the claimed agent may be (as agents.MAX_DEPTH).
MAX_DEPTH = 16


def in_broker_namespace(connecting_pid: int, claimed_pid: int) -> int | None:
    """The claimed pid as the broker's namespace numbers it, or None when the connecting
    process shares the broker's namespace (the claim needs no reading).

    IdentityRejected when the connecting process is in another namespace and none of its
    ancestors there has the claimed pid.
    """
    own = namespaces.namespace_of(os.getpid())
    theirs = namespaces.namespace_of(connecting_pid)
    if own is None or theirs is None or own == theirs:
        return None
    depth = len(namespaces.namespace_pids(connecting_pid))
    if depth < 2:
        raise IdentityRejected(
            f"the connecting process (pid {connecting_pid}) is in another pid namespace whose pids the "
            "broker cannot read (no NSpid in /proc); a claim made there cannot be checked"
        )
    try:
        proc: psutil.Process | None = psutil.Process(connecting_pid)
        for _ in range(MAX_DEPTH):
            if proc is None:
                break
            chain = namespaces.namespace_pids(proc.pid)
            if len(chain) < depth:
                break  # out of the container: nothing above can be named from in there
            if len(chain) == depth and chain[-1] == claimed_pid:
                return proc.pid
            proc = proc.parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    raise IdentityRejected(
        f"pid {claimed_pid} in the connecting process's own pid namespace (a container's; the broker sees it "
        f"as pid {connecting_pid}) is not one of its ancestors there"
    )
