"""TCP peers' per-session secret files are removed once their agent session has ended."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted

from claudepeers.broker.core import Claim, Credentials
from claudepeers.broker.secretfiles import SecretFiles
from claudepeers.common import agents
from claudepeers.common.client import tcp_secret_name

from broker_fakes import FakeBridge, FakeProcesses, World
from conftest import BrokerProcess, broker_env


def write_secret(directory: Path, pid: int, start: float) -> Path:
    """A secret file as a bridge over TCP leaves it."""
    path = directory / tcp_secret_name(pid, start)
    path.write_text("secret\n")
    return path


def test_sweep_removes_the_files_of_ended_sessions_only(tmp_path: Path) -> None:
    """At start: files of ended sessions (or reused pids) go; a live session's stays."""
    processes = FakeProcesses()
    processes.spawn(100, 50.0)
    processes.spawn(300, 99.0)  # pid 300 now belongs to another process
    live = write_secret(tmp_path, 100, 50.0)
    ended = write_secret(tmp_path, 200, 60.0)
    reused = write_secret(tmp_path, 300, 70.0)
    other = tmp_path / "claude-peers.token"
    other.write_text("token\n")
    assert SecretFiles(tmp_path, processes).sweep() == 2
    assert live.exists() and other.exists() and not ended.exists() and not reused.exists()
    assert SecretFiles(tmp_path / "missing", processes).sweep() == 0


@pytest.fixture
def world(short_dir: Path) -> Iterator[World]:
    """A started broker world whose broker removes secret files in ``short_dir``."""
    w = World(short_dir)
    w.broker.secret_files = SecretFiles(short_dir, w.processes)
    pytest_twisted.blockon(w.broker.start())
    yield w
    pytest_twisted.blockon(w.close())


@pytest_twisted.inlineCallbacks
def test_a_tcp_peer_whose_agent_ends_loses_its_secret_file(world: World, short_dir: Path) -> None:
    """The reap that marks a TCP-made peer gone removes its session's file; a UNIX peer's
    session (which never has one) and live sessions are left alone."""
    agent, _ = world.agent()
    actor, _ = yield world.broker.register(FakeBridge(), Credentials("tcp"), Claim(agent, 100.0, "codex", "/box"))
    path = write_secret(short_dir, agent, 100.0)
    local_agent, local_bridge = world.agent()
    yield world.register(local_agent, local_bridge, FakeBridge())
    world.broker.reap()
    assert path.exists()
    world.processes.end(agent)
    world.broker.reap()
    assert actor.state == "gone" and not path.exists()


def test_the_broker_sweeps_ended_sessions_files_at_start(short_dir: Path) -> None:
    """A real broker started over files left from earlier sessions removes the ended ones."""
    run = short_dir / "run"
    run.mkdir(mode=0o700)
    me = os.getpid()
    live = write_secret(run, me, agents.process_start(me) or 0.0)
    ended = write_secret(run, me, 12345.0)  # this pid, another start time: that session ended
    broker = BrokerProcess(short_dir, broker_env(short_dir)).start()
    try:
        assert live.exists() and not ended.exists(), broker.log_text()
    finally:
        broker.stop()
