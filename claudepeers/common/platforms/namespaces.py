"""PID namespaces (Linux): which one a process is in, and its pid in each of them.

A container that mounts the host's run directory connects to the host's broker from a
pid namespace of its own. The kernel's ``SO_PEERCRED`` pid is already the pid in the
broker's namespace; what the bridge claims (its agent's pid, read from the container's
``/proc``) is a pid of the container's namespace. These reads let the broker interpret
a claim in the namespace it was made in (``/proc/<pid>/status``'s ``NSpid`` line lists a
process's pid in every namespace from the procfs's own inward). Elsewhere (macOS) there
are no pid namespaces: every answer says "the broker's own".
"""

from __future__ import annotations

import os


def namespace_of(pid: int) -> int | None:
    """The inode of ``pid``'s pid namespace, or None when it cannot be read (no /proc,
    the process ended, not ours)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def namespace_pids(pid: int) -> tuple[int, ...]:
    """``pid``'s pid in each pid namespace it is in, outermost (this /proc's) first;
    empty when unknown (no /proc, a kernel without NSpid, the process ended)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"NSpid:"):
                    return tuple(int(field) for field in line.split()[1:])
    except (OSError, ValueError):
        return ()
    return ()
