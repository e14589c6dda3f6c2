"""Sending to many, groups and claims through real bridges (``claudepeers.bridge.main`` under
stand-in agents) and a real broker process; and the pre-commit guard in a real git repository."""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Callable

import pytest

from bridge_support import asyncio_test, git, open_bridge, ready, started_agents, text_of
from conftest import BrokerProcess


@pytest.fixture
def make_agent(broker_process: BrokerProcess) -> Any:
    """Start fake agents in the broker's environment; all are ended afterwards."""
    with started_agents(broker_process) as make:
        yield lambda name, cwd, channels=True: make(name, channels=channels, cwd=cwd)
    print(f"--- the broker's log ---\n{broker_process.log_text()[-6000:]}")


def new_repo(base: Path) -> Path:
    """A git repository with one commit under ``base``."""
    repo = base / "repo"
    (repo / "src").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=repo)
    return repo


@pytest.mark.slow  # six bridges: about 10 s on a quiet 2-core machine, far more under load
@asyncio_test
async def test_scope_send_groups_and_claims_through_the_bridges(make_agent: Callable,
                                                               broker_process: BrokerProcess) -> None:
    """scope:repo to five peers, one offline: four shown, one queued and delivered on reconnect;
    a group outlives its member's reconnect; an overlapping claim is refused naming the holder."""
    repo = new_repo(broker_process.base)
    agents = [make_agent(name, repo) for name in ("a", "b", "c", "d", "e", "f")]
    async with AsyncExitStack() as stack:
        bridges = [await stack.enter_async_context(open_bridge(agent, registered=False)) for agent in agents[:5]]
        await ready(*bridges)
        # f joins a group, then its bridge goes (the agent lives on: offline).
        async with open_bridge(agents[5]) as f_first:
            assert "group:rev" in await f_first.text("join_group", {"name": "rev"})
        sent = await bridges[0].text("send_message", {"to_id": "scope:repo", "message": "standup in five"})
        assert sent.startswith("Sent to scope:repo (5 peers): 1 queued, 4 shown."), sent
        assert re.search(r"- #\d+ queued for f \(\w+\): f is offline", sent), sent
        for bridge in bridges[1:]:
            [note] = await bridge.channel.wait_for(1)
            assert note.content == "standup in five"
        async with open_bridge(agents[5]) as f_again:
            [note] = await f_again.channel.wait_for(1)
            assert note.content == "standup in five"
            assert "group:rev: f (" in await bridges[1].text("list_groups")
            to_group = await bridges[1].text("send_message", {"to_id": "group:rev", "message": "review please"})
            assert to_group.startswith("Sent to group:rev (1 peer): 1 shown."), to_group
            claimed = await f_again.text("claim_paths", {"paths": ["src/**"], "reason": "refactoring"})
            assert claimed.startswith("Claimed src until ")
            refused = await bridges[2].call("claim_paths", {"paths": ["src/api.py"], "reason": "fix"})
            assert refused.is_error and "claimed by f (" in text_of(refused) and "refactoring" in text_of(refused)
            listing = await bridges[2].text("list_peers", {"scope": "repo"})
            assert "Claims: src until " in listing and "(refactoring)" in listing and "Groups: rev" in listing
            assert "Released src." in await f_again.text("release_paths", {"all": True})
            assert "Claimed src/api.py" in await bridges[2].text("claim_paths", {"paths": ["src/api.py"], "reason": "fix"})


@asyncio_test
async def test_pre_commit_guard_refuses_claimed_paths_with_an_override(make_agent: Callable,
                                                                       broker_process: BrokerProcess) -> None:
    """A real `git commit` touching another peer's claim is refused naming it; the override and
    unclaimed paths pass; an existing pre-commit hook still runs first; no broker: it passes."""
    repo = new_repo(broker_process.base)
    hooks = repo / ".git" / "hooks"
    earlier = hooks / "pre-commit"
    earlier.write_text(f"#!/bin/sh\necho ran >> {repo.parent / 'earlier-hook-ran'}\n")
    earlier.chmod(0o755)
    env = {**broker_process.env, "PYTHONPATH": broker_process.env["PYTHONPATH"]}
    command = [sys.executable, "-c", "from claudepeers.cli.main import main; main()", "install", "--claims-guard"]
    installed = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert (hooks / "pre-commit.before-claude-peers").exists()
    holder = make_agent("holder", repo, channels=False)
    async with open_bridge(holder) as bridge:
        await bridge.text("claim_paths", {"paths": ["src/*.py"], "reason": "reworking the parser"})
        (repo / "src" / "parser.py").write_text("x = 1\n")
        (repo / "README").write_text("hello\n")
        git("add", "README", cwd=repo)
        assert git("commit", "-q", "-m", "readme", cwd=repo, env=env).returncode == 0
        git("add", "src/parser.py", cwd=repo)
        refused = git("commit", "-q", "-m", "parser", cwd=repo, env=env, check=False)
        assert refused.returncode != 0
        assert "src/parser.py: claimed as src/*.py by holder (" in refused.stderr
        assert "reworking the parser" in refused.stderr and "CLAUDE_PEERS_CLAIMS_OVERRIDE=1" in refused.stderr
        forced = git("commit", "-q", "-m", "parser", cwd=repo, env={**env, "CLAUDE_PEERS_CLAIMS_OVERRIDE": "1"})
        assert forced.returncode == 0 and "claims not checked" in forced.stderr
    assert (repo.parent / "earlier-hook-ran").read_text().count("ran") == 3
    broker_process.stop()
    (repo / "src" / "parser.py").write_text("x = 2\n")
    git("add", "src/parser.py", cwd=repo)
    passed = git("commit", "-q", "-m", "no broker", cwd=repo, env=env)
    assert "the broker is not running; claims not checked" in passed.stderr
