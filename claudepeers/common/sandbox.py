"""Agents' sandboxes that block the broker's UNIX socket, and what ``doctor`` learns of them.

Codex runs commands under a sandbox: on macOS seatbelt, whose ``workspace-write`` profile
denies ``connect()`` to a UNIX socket outside an allow-list (reported as EPERM, or a
misleading ENOENT while the socket exists); on Linux a seccomp filter does the same.
A client that meets such a refusal leaves a small record where a sandbox still lets it
write (``/tmp``, or the temporary directory), and ``doctor`` turns the records into a
finding with the fix: reach the broker over TCP (``install --codex --tcp`` and a broker
run with ``CLAUDE_PEERS_TCP=1``).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from claudepeers.common import agents

#: Environment markers Codex puts into every sandboxed command.
SANDBOX_MARKERS = ("CODEX_SANDBOX", "CODEX_SANDBOX_NETWORK_DISABLED")
#: Records older than this say nothing about today's setup.
RECORD_MAX_AGE = 24 * 3600.0
#: Errors a sandbox gives for a denied connect(); ENOENT counts only while the socket exists.
DENIED = (errno.EPERM, errno.EACCES)


def record_dirs(uid: int | None = None) -> list[Path]:
    """Where records go and are looked for: ``/tmp`` first (Codex hands its MCP servers no
    TMPDIR), then this process's temporary directory (on macOS a per-user folder)."""
    name = f"claude-peers-{os.getuid() if uid is None else uid}"
    dirs = [Path("/tmp") / name, Path(tempfile.gettempdir()) / name]
    return list(dict.fromkeys(dirs))


def error_number(error: BaseException) -> int | None:
    """The errno of an OSError or of Twisted's ConnectError (its ``osError``)."""
    number = getattr(error, "errno", None)
    if number is None:
        number = getattr(error, "osError", None)
    return number if isinstance(number, int) else None


def is_denied(error: BaseException, socket_path: Path) -> bool:
    """True when a connect() to ``socket_path`` failed the way a sandbox refuses it."""
    number = error_number(error)
    if number in DENIED:
        return True
    return number == errno.ENOENT and os.path.lexists(socket_path)


def sandbox_of(environ: Mapping[str, str]) -> str | None:
    """The sandbox this process says it runs in (Codex's markers), or None."""
    for name in SANDBOX_MARKERS:
        if environ.get(name):
            return f"{name}={environ[name]}"
    return None


def note_failed_connect(settings: Any, error: BaseException, environ: Mapping[str, str] | None = None,
                        now: float | None = None) -> Path | None:
    """Leave a record when connecting to the broker's socket was refused like a sandbox does.

    Best effort: a sandbox may forbid this write too; nothing here may fail the caller.
    """
    if getattr(settings, "url", None) or not is_denied(error, settings.socket_path):
        return None
    env = os.environ if environ is None else environ
    record = {
        "pid": os.getpid(),
        "time": time.time() if now is None else now,
        "socket": str(settings.socket_path),
        "errno": error_number(error),
        "error": str(error),
        "sandbox": sandbox_of(env),
        "agent": _agent_kind(),
    }
    for folder in record_dirs():
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            if not _ours(folder):
                continue
            path = folder / f"connect-failed-{os.getpid()}.json"
            path.write_text(json.dumps(record))
            return path
        except OSError:
            continue
    return None


def failed_connects(socket_path: Path, now: float | None = None, dirs: Iterable[Path] | None = None) -> list[dict]:
    """Recent records of refused connections to ``socket_path`` (newest first), from
    folders that belong to this user."""
    now = time.time() if now is None else now
    found: dict[tuple[int, float], dict] = {}
    for folder in record_dirs() if dirs is None else dirs:
        try:
            if not _ours(folder):
                continue
            paths = list(folder.glob("connect-failed-*.json"))
        except OSError:
            continue
        for path in paths:
            try:
                record = json.loads(path.read_text())
                when = float(record["time"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if now - when <= RECORD_MAX_AGE and record.get("socket") == str(socket_path):
                found[(int(record.get("pid") or 0), when)] = record
    return sorted(found.values(), key=lambda record: -float(record["time"]))


def _ours(folder: Path) -> bool:
    """A real directory (no symlink) of this user's, shut to others: /tmp is shared."""
    info = os.lstat(folder)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _agent_kind() -> str | None:
    """The agent above this process (claude-code, codex), if psutil may look."""
    try:
        agent = agents.find_agent(os.getpid())
    except Exception:  # a sandbox may deny the process table too; the record is a hint
        return None
    return agent.client_type if agent is not None else None
