"""kill_peer on real processes: verified, SIGTERM then SIGKILL, recorded, never the wrong pid."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import pytest_twisted
from twisted.internet import reactor

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Credentials
from claudepeers.broker.records import GONE
from claudepeers.common.settings import Limits

from broker_fakes import FakeBridge, World


def fake_agent(directory: Path, name: str, ignore_term: bool) -> subprocess.Popen:
    """Start an executable script named ``name`` (e.g. ``claude``) that waits for a signal."""
    script = directory / name
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import signal, sys
        if {ignore_term!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        while True:
            signal.pause()
    """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    process = subprocess.Popen([str(script)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stdout.readline() == b"ready\n"
    return process


@pytest.fixture
def world(short_dir: Path) -> Iterator[World]:
    """A broker world with a short kill grace and the real reactor for the kill's timers."""
    w = World(short_dir, Limits(kill_grace_seconds=0.3), reactor=reactor)
    pytest_twisted.blockon(w.broker.start())
    yield w
    pytest_twisted.blockon(w.close())


@pytest.fixture
def processes(short_dir: Path) -> Iterator[list[subprocess.Popen]]:
    """Processes started by a test; killed by pid afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def register_real(world: World, process: subprocess.Popen, client_type: str = "claude-code"):
    """Register a peer whose agent is the real ``process`` (its bridge is faked)."""
    start = psutil.Process(process.pid).create_time()
    bridge = process.pid + 100000
    world.processes.spawn(process.pid, start)
    world.processes.spawn(bridge, start, parent=process.pid)
    return world.register(process.pid, bridge, FakeBridge(), start=start, client_type=client_type,
                          name=f"agent-{process.pid}")


@pytest_twisted.inlineCallbacks
def test_kill_ends_agent_with_sigterm_and_records_it(world: World, processes, short_dir: Path) -> None:
    """A cooperative agent ends on SIGTERM; the outcome is reported, recorded, the peer gone."""
    agent = fake_agent(short_dir, "claude", ignore_term=False)
    processes.append(agent)
    target, _ = yield register_real(world, agent)
    outcome, peer_id, detail = yield world.broker.kill(None, Credentials("unix", pid=os.getpid(), uid=0), target.name)
    assert (outcome, peer_id) == ("terminated", target.id) and "SIGTERM" in detail
    assert agent.wait(5) == -15
    assert target.state == GONE
    kills = yield world.store.kills()
    assert kills[0]["target_id"] == target.id and kills[0]["outcome"] == "terminated" and kills[0]["by_id"] == "cli"


@pytest_twisted.inlineCallbacks
def test_kill_escalates_to_sigkill_after_the_grace(world: World, processes, short_dir: Path) -> None:
    """An agent ignoring SIGTERM is killed with SIGKILL after the grace period."""
    agent = fake_agent(short_dir, "codex", ignore_term=True)
    processes.append(agent)
    target, _ = yield register_real(world, agent, client_type="codex")
    outcome, _, detail = yield world.broker.kill(None, Credentials("unix", pid=os.getpid(), uid=0), target.id)
    assert outcome == "killed" and "SIGKILL" in detail
    assert agent.wait(5) == -9


@pytest_twisted.inlineCallbacks
def test_kill_refuses_a_process_that_is_not_the_registered_agent(world: World, processes, short_dir: Path) -> None:
    """A live pid whose process is not a claude/codex agent is never signalled."""
    other = fake_agent(short_dir, "innocent", ignore_term=False)
    processes.append(other)
    target, _ = yield register_real(world, other)
    with pytest.raises(wire.KillRefused, match="not a claude-code agent"):
        yield world.broker.kill(None, Credentials("unix", pid=os.getpid(), uid=0), target.id)
    assert other.poll() is None
    kills = yield world.store.kills()
    assert kills[0]["outcome"] == "refused"


@pytest_twisted.inlineCallbacks
def test_kill_refuses_a_reused_pid(world: World, processes, short_dir: Path) -> None:
    """A recorded start time that does not match the running process means a reused pid."""
    agent = fake_agent(short_dir, "claude", ignore_term=False)
    processes.append(agent)
    target, _ = yield register_real(world, agent)
    target.update(agent_start=target.record.agent_start - 1000)
    world.processes.spawn(agent.pid, target.record.agent_start)
    with pytest.raises(wire.KillRefused, match="reused"):
        yield world.broker.kill(None, Credentials("unix", pid=os.getpid(), uid=0), target.id)
    assert agent.poll() is None


@pytest_twisted.inlineCallbacks
def test_kill_refuses_the_callers_own_session(world: World, processes, short_dir: Path) -> None:
    """A peer cannot kill itself, nor can a client running inside the target's agent."""
    agent = fake_agent(short_dir, "claude", ignore_term=False)
    processes.append(agent)
    target, _ = yield register_real(world, agent)
    with pytest.raises(wire.KillRefused, match="your own session"):
        yield world.broker.kill(target, Credentials("unix", pid=agent.pid + 100000, uid=0), target.id)
    with pytest.raises(wire.KillRefused, match="calling from"):
        yield world.broker.kill(None, Credentials("unix", pid=agent.pid + 100000, uid=0), target.id)
    assert agent.poll() is None
