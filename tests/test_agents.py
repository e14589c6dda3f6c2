"""Liveness of an agent process: pid and start time, read from /proc the way psutil does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil

from claudepeers import agents


def test_a_live_process_with_its_start_time_is_alive_and_agrees_with_psutil() -> None:
    """Our own process is alive at its psutil start time, and not at another one."""
    start = psutil.Process().create_time()
    assert agents.is_alive(os.getpid(), start)
    assert agents.is_alive(os.getpid(), start) == agents._is_alive_psutil(os.getpid(), start)
    assert not agents.is_alive(os.getpid(), start + 1.0)  # a reused pid would have another start


def test_zombies_ended_and_impossible_pids_are_not_alive() -> None:
    """A zombie (ended, not yet reaped), an ended process and pids no process has are dead."""
    child = subprocess.Popen(["sleep", "0.05"])
    start = psutil.Process(child.pid).create_time()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # it has ended; left unreaped: a zombie
    assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    assert not agents.is_alive(child.pid, start)
    child.wait()
    assert not agents.is_alive(child.pid, start)
    assert not agents.is_alive(0, 0.0) and not agents.is_alive(-5, 0.0) and not agents.is_alive(2**22 + 7, 0.0)


def test_a_command_name_with_spaces_and_parentheses_is_parsed(short_dir: Path) -> None:
    """The name field of /proc/<pid>/stat may hold ") (": fields are counted from the last ")"."""
    odd = short_dir / "a) b (c"
    os.symlink(shutil.which("sleep") or "/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        start = psutil.Process(proc.pid).create_time()
        assert agents.is_alive(proc.pid, start)
        assert not agents.is_alive(proc.pid, start - 1.0)
    finally:
        proc.kill()
        proc.wait()
