"""The files a broker keeps beside its socket, and the process limits it raises at start:
the private run directory, the TCP token and key (0600), the descriptor limit, and a
file's identity (is the socket at its path still ours?). No Twisted.
"""

from __future__ import annotations

import os
import resource
import secrets
import stat
from pathlib import Path

from claudepeers.common.settings import Settings


class StartupError(Exception):
    """The broker cannot start; the message says why and what to do."""


def secure_directory(path: Path) -> None:
    """Create ``path`` 0700 if it is missing; an existing one must already be private.

    Only a directory the broker created gets its mode changed (makedirs' mode is masked by
    the umask). An existing directory that others may enter (a 1777 /tmp, say) is refused,
    not chmod'ed: it is not ours to change, and a private subdirectory instead would move
    the socket away from the path every client computes from CLAUDE_PEERS_SOCKET.
    """
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        info = path.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise StartupError(f"the run directory {path} is not a directory") from None
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise StartupError(
                f"the run directory {path} (which holds the socket) is not private: mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}; the broker only changes the mode of a "
                "directory it creates. Point CLAUDE_PEERS_SOCKET into a directory of your own (mode 0700), "
                f"or make this one private (chmod 700 {path})"
            ) from None
        return
    os.chmod(path, 0o700)


def raise_fd_limit() -> int:
    """Raise the soft limit on open descriptors to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # macOS caps it below an unlimited hard limit
        return soft
    return wanted


def ensure_token(path: Path) -> str:
    """The TCP token, created at random in a 0600 file when missing."""
    if path.exists():
        os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


def tcp_key_path(settings: Settings) -> Path:
    """The key that signs TCP peers' secrets: beside the database, whose peers it signs for."""
    return settings.db_path.with_name(settings.db_path.name + ".tcp-key")


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None when there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)
