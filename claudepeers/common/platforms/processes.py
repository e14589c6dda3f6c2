"""Is a process alive, and the same one that started at a recorded time?

Two implementations that must agree (the tests run both): the portable one asks psutil
(sysctl on macOS, /proc on Linux); the Linux fast path reads ``/proc/<pid>/stat`` once,
which keeps the broker's reap of 1,000 idle peers cheap. The fast path is chosen only
when ``/proc`` is mounted, so a missing ``/proc`` never makes every peer look dead.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

import psutil

#: Start times match within this many seconds: psutil's Linux resolution is 1/100 s
#: (clock ticks), macOS's a microsecond.
START_TOLERANCE = 0.05
#: ``/proc`` is there to read (Linux, WSL2); decided once, at import.
HAVE_PROC = os.path.exists("/proc/self/stat")


def same_start(recorded: float, actual: float) -> bool:
    """Two start times of one process, as read at different moments or by different means."""
    return abs(recorded - actual) < START_TOLERANCE


def process_start(pid: int) -> float | None:
    """The start time of the running process ``pid`` (psutil's create_time), or None when no
    such process runs (a zombie counts as ended, and so does another user's we cannot read)."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_alive_portable(pid: int, start: float) -> bool:
    """psutil's answer: the process runs, is no zombie, and started at ``start``."""
    actual = process_start(pid)
    return actual is not None and same_start(start, actual)


def is_alive_proc(pid: int, start: float) -> bool:
    """The Linux fast path: one read of ``/proc/<pid>/stat``."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except FileNotFoundError:
        return False  # /proc is mounted (HAVE_PROC), so the process is gone
    except OSError:
        return is_alive_portable(pid, start)
    # The command name (field 2) may hold spaces and parentheses: fields count from the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # zombie or dead
        return False
    # Field 22, the start time in clock ticks since boot, is psutil's create_time basis.
    return same_start(start, int(fields[19]) / _CLOCK_TICKS + _boot_time())


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_boot: list[float] = [0.0, -1.0]  # boot time, and when (monotonic) it was read


def chosen(portable: bool, have_proc: bool = HAVE_PROC) -> Callable[[int, float], bool]:
    """The liveness check to use: the /proc reader only where /proc is mounted and not ``portable``."""
    return is_alive_portable if portable or not have_proc else is_alive_proc


def _boot_time() -> float:
    """psutil.boot_time(), read again at most once a second (one reap reads it once)."""
    now = time.monotonic()
    if now - _boot[1] > 1.0:
        _boot[0], _boot[1] = psutil.boot_time(), now
    return _boot[0]


def send_signal(pid: int, start: float, sig: int, portable: bool = False) -> bool:
    """Signal the process ``pid`` that started at ``start``; False when it is gone (or ``pid``
    now names another process).

    Linux: through a pidfd, opened and then checked against ``start``, so that a pid reused
    between the check and the signal can never be hit (the pidfd names one process for
    good). Elsewhere, or ``portable``: psutil, which checks the start time just before.
    """
    if not portable and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            fd = -1  # pidfds refused (an old kernel, a sandbox): psutil's way below
        if fd >= 0:
            try:
                if not is_alive_portable(pid, start):
                    return False
                signal.pidfd_send_signal(fd, sig)
                return True
            except ProcessLookupError:
                return False
            finally:
                os.close(fd)
    try:
        proc = psutil.Process(pid)
        if not same_start(start, proc.create_time()):
            return False
        proc.send_signal(sig)
        return True
    except psutil.NoSuchProcess:
        return False
