"""Liveness of an agent process (pid and start time) and finding the agent above a process.

Every test runs twice: with the Linux fast path (one read of /proc/<pid>/stat) and with
the portable psutil path that macOS runs, which must give the same answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from claudepeers.common import agents

from claudepeers.common import platforms
from claudepeers.common.platforms import processes


@pytest.fixture(autouse=True, params=[
    pytest.param("fast", marks=pytest.mark.skipif(not processes.HAVE_PROC, reason="no /proc on this system")),
    "portable",
])
def liveness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the Linux /proc reader (where /proc exists), then with the portable psutil one."""
    chosen = processes.is_alive_proc if request.param == "fast" else processes.is_alive_portable
    monkeypatch.setattr(platforms, "is_alive", chosen)
    return str(request.param)


def test_a_live_process_with_its_start_time_is_alive_and_agrees_with_psutil() -> None:
    """Our own process is alive at its psutil start time, and not at another one."""
    start = psutil.Process().create_time()
    assert agents.is_alive(os.getpid(), start)
    assert processes.is_alive_proc(os.getpid(), start) == processes.is_alive_portable(os.getpid(), start)
    assert not agents.is_alive(os.getpid(), start + 1.0)  # a reused pid would have another start


def test_zombies_ended_and_impossible_pids_are_not_alive() -> None:
    """A zombie (ended, not yet reaped), an ended process and pids no process has are dead."""
    child = subprocess.Popen(["sleep", "0.05"])
    start = psutil.Process(child.pid).create_time()
    # Left unreaped once it has ended: a zombie (os.waitid's WNOWAIT is not on every Python).
    deadline = time.monotonic() + 5.0
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for another process to end; nothing to subscribe to
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


@pytest.fixture
def fake_claude(short_dir: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A process named ``claude`` (a shell under that name) with one child: (agent, child pid)."""
    claude = short_dir / "claude"
    os.symlink(shutil.which("sh") or "/bin/sh", claude)
    agent = subprocess.Popen([str(claude), "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5.0
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(agent.pid).children()
            time.sleep(0.01)  # waiting for another process's fork; nothing to subscribe to
        assert children, "the fake agent did not start its child"
        yield agent, children[0].pid
    finally:
        for child in psutil.Process(agent.pid).children() if agent.poll() is None else []:
            child.kill()
        agent.kill()
        agent.wait()


def test_the_agent_above_a_process_is_found_and_lives_until_it_ends(fake_claude: tuple[subprocess.Popen, int]) -> None:
    """find_agent walks up to the process named claude; it is alive, an ancestor, then dead."""
    agent_proc, child = fake_claude
    agent = agents.find_agent(child)
    assert agent is not None and agent.pid == agent_proc.pid and agent.client_type == "claude-code"
    assert agents.session_of(child) == agent
    assert agents.is_ancestor(agent.pid, child) and not agents.is_ancestor(child, agent.pid)
    assert agents.is_alive(agent.pid, agent.start)
    psutil.Process(child).kill()
    agent_proc.kill()
    agent_proc.wait()
    assert not agents.is_alive(agent.pid, agent.start)
