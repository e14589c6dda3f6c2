"""Everything that differs between Linux and macOS, chosen once at import.

Nothing else in claude-peers asks which platform it runs on; it calls these names:

- :func:`peer_credentials` (pid, uid) of the other end of a UNIX connection
  (Linux ``SO_PEERCRED``; macOS ``LOCAL_PEERCRED`` + ``LOCAL_PEERPID``);
- :func:`is_alive` for a pid and its start time (Linux: one read of ``/proc/<pid>/stat``;
  elsewhere psutil; a missing ``/proc`` never means "dead");
- :func:`send_signal` to a pid and its start time (Linux: through a pidfd, no reuse window);
- :func:`watch_exit` for the agent's end (Linux pidfd; macOS kqueue ``NOTE_EXIT``;
  a psutil poll as the last resort);
- :func:`check_socket_path` (sun_path holds 108 bytes on Linux, 104 on macOS) and
  :func:`lock_exclusive` for the autostart lock;
- :data:`SERVICE_KIND` (systemd user unit or launchd agent, see :mod:`.services`).

``CLAUDE_PEERS_PORTABLE=1`` turns the Linux fast paths off (psutil liveness, the psutil
poll for exits): the code a macOS user runs, run here. The agent's process tree and argv
are read with psutil on every platform (:mod:`claudepeers.common.agents`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from claudepeers.common.platforms import credentials, paths, processes

#: "linux", "darwin" or another ``sys.platform`` value.
SYSTEM = "linux" if sys.platform.startswith("linux") else sys.platform
#: The Linux fast paths are off: the portable (psutil) implementations run instead.
PORTABLE = (os.environ.get("CLAUDE_PEERS_PORTABLE") or "").strip().lower() in {"1", "true", "yes", "on"}

#: (pid, uid) of the peer of a connected UNIX socket (``OSError`` when the kernel will not say).
peer_credentials = credentials.reader_for(SYSTEM)
#: A pidfd naming the process that connected a UNIX socket (Linux 6.5+), else None.
peer_pidfd = credentials.pidfd_reader_for(SYSTEM)
#: True when a pid runs and started at the given time (zombies and reused pids are dead).
is_alive = processes.chosen(PORTABLE)
#: The longest UNIX socket path this platform can bind or connect to, in bytes.
SOCKET_PATH_LIMIT = paths.socket_path_limit(SYSTEM)
#: "launchd" on macOS, "systemd" elsewhere.
SERVICE_KIND = "launchd" if SYSTEM == "darwin" else "systemd"

lock_exclusive = paths.lock_exclusive


def check_socket_path(path: Path | str, setting: str = "CLAUDE_PEERS_SOCKET") -> None:
    """Raise ``ValueError`` naming ``setting`` and the limit when ``path`` is too long here."""
    paths.check_socket_path(str(path), SOCKET_PATH_LIMIT, SYSTEM, setting)


def send_signal(pid: int, start: float, sig: int) -> bool:
    """Signal process ``pid`` (started at ``start``); False when it is gone or the pid was reused."""
    return processes.send_signal(pid, start, sig, portable=PORTABLE)


def watch_exit(reactor: Any, pid: int, start: float, on_exit: Callable[[], None]) -> Any:
    """Call ``on_exit`` once when process ``pid`` (started at ``start``) ends; has ``stop()``."""
    from claudepeers.common.platforms import exitwatch  # Twisted: not for the hook, which imports this package too

    return exitwatch.watch_exit(reactor, pid, start, on_exit, is_alive, portable=PORTABLE)
