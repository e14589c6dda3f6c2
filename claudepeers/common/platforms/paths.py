"""UNIX socket paths and file locks, where Linux and macOS differ (or seem to).

``struct sockaddr_un.sun_path`` holds 108 bytes on Linux and 104 on macOS (``<sys/un.h>``),
the final NUL included, so the longest usable path is 107 or 103 bytes. A longer
``CLAUDE_PEERS_SOCKET`` would fail deep inside bind()/connect() with "AF_UNIX path too
long"; we say so at once, naming the setting and the limit.

Locks: ``fcntl.flock`` (the autostart lock) and Twisted's ``FilesystemLock`` (a symlink
naming the pid: the broker's socket and database locks) behave the same on both.
"""

from __future__ import annotations

import fcntl

#: sizeof(sun_path) per platform; other BSDs share macOS's 104.
SUN_PATH_BYTES = {"linux": 108, "darwin": 104}


def socket_path_limit(system: str) -> int:
    """The longest UNIX socket path on ``system``, in bytes (sun_path less its final NUL)."""
    return SUN_PATH_BYTES.get(system, 104) - 1


def check_socket_path(path: str, limit: int, system: str, setting: str) -> None:
    """Raise ``ValueError`` when ``path`` (from ``setting``) is longer than ``limit`` bytes."""
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > limit:
        where = {"darwin": "macOS", "linux": "Linux"}.get(system, system)
        raise ValueError(
            f"{setting} ({path!r}) is {size} bytes long; {where} allows at most {limit} bytes in a "
            f"UNIX socket path (sun_path holds {limit + 1} with the final NUL): choose a shorter path"
        )


def lock_exclusive(fd: int) -> None:
    """Block until this process holds the exclusive lock on the open file ``fd``."""
    fcntl.flock(fd, fcntl.LOCK_EX)
