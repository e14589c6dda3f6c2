"""Real bridges (``python -m claudepeers.bridge.main``) as processes, against a real broker: a
killed peer, a restarted bridge or broker, SIGTERM, stdin's end, agent death, bridges
starting at once, a reused pid, a newer bridge taking over, a hanging git.

Each bridge is the child of a stand-in ``claude``/``codex`` process and talks MCP over
stdio with the mcp SDK's client (legacy handshake, a NotificationBinding for the channel).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Callable

import anyio
import psutil
import pytest

from claudepeers.bridge.tool_schemas import TOOLS
from bridge_support import FakeAgent, asyncio_test, body_of, ids_in, my_id, open_bridge, ready, text_of, wait_gone
from conftest import ROOT, BrokerProcess, broker_env


@asyncio_test
async def test_kill_peer_ends_the_agent_tree_and_is_refused_for_itself(make_agent: Callable) -> None:
    """kill_peer terminates the target's agent process (and so its bridge); never the caller."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a) as ca:
        async with open_bridge(b, "codex-mcp-client") as cb:
            b_bridge = await cb.bridge_pid()
            own = await ca.call("kill_peer", {"peer_id": "alpha"})
            assert own.is_error and "kill_peer failed" in text_of(own)
            killed = await ca.text("kill_peer", {"peer_id": "beta"})
            assert killed.startswith("kill_peer ")
            await anyio.to_thread.run_sync(b.process.wait, 10)
            assert await wait_gone(b_bridge) < 2.0
            again = await ca.call("kill_peer", {"peer_id": "beta"})
            assert again.is_error, text_of(again)
        assert a.process.poll() is None


@asyncio_test
async def test_restarted_bridge_keeps_the_id_and_gets_queued_mail_once(make_agent: Callable) -> None:
    """Claude Code restarts its MCP server (compaction): same agent -> same id, queued mail once."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(b, "codex-mcp-client") as cb:
        async with open_bridge(a) as first:
            first_id = await my_id(first)
            await cb.text("send_message", {"to_id": "alpha", "message": "before"})
            await first.channel.wait_for(1)
            first_pid = await first.bridge_pid()
            os.kill(first_pid, signal.SIGKILL)  # as an agent may do to its MCP server
            await wait_gone(first_pid)
        for body in ("while away 1", "while away 2"):
            sent = await cb.text("send_message", {"to_id": first_id, "message": body})
            assert " queued for alpha " in sent
        async with open_bridge(a) as second:
            assert await my_id(second) == first_id
            items = await second.channel.wait_for(2)
            await cb.text("send_message", {"to_id": "alpha", "message": "after"})
            items = await second.channel.wait_for(3)
            assert [body_of(n.content) for n in items] == ["while away 1", "while away 2", "after"]


@asyncio_test
async def test_broker_restart_loses_nothing_and_shows_nothing_twice(
    make_agent: Callable, broker_process: BrokerProcess
) -> None:
    """Bridges reconnect to a killed and restarted broker with their ids; mail flows on, once."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        a_id, b_id = await my_id(ca), await my_id(cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "one"})
        await ca.channel.wait_for(1)
        await ca.text("send_message", {"to_id": "beta", "message": "seen before"})
        assert "seen before" in await cb.text("whoami")
        await ca.text("send_message", {"to_id": "beta", "message": "unseen"})
        broker_process.stop(signal.SIGKILL)
        broker_process.start()
        # Tool calls wait for the bridges to re-register; the ids stay. The held message
        # shows up once, in whichever of b's tool results comes first after the re-push.
        assert await my_id(ca) == a_id
        texts = [await cb.text("whoami")]
        assert texts[0].split("ID: ")[1].split("\n")[0] == b_id
        texts.append(await cb.text("send_message", {"to_id": "alpha", "message": "two"}))
        texts.append(await cb.text("check_messages"))
        joined = "\n".join(texts)
        assert joined.count("\u2502 unseen") == 1 and "seen before" not in joined
        items = await ca.channel.wait_for(2)
        await cb.text("send_message", {"to_id": "alpha", "message": "three"})
        items = await ca.channel.wait_for(3)
        assert [body_of(n.content) for n in items] == ["one", "two", "three"]
        assert await cb.text("check_messages") == "No new messages."


@asyncio_test
async def test_sigterm_and_agent_death_end_the_bridge_promptly(make_agent: Callable) -> None:
    """SIGTERM ends a bridge in well under a second; so does the death of its agent."""
    a = make_agent("alpha", "claude")
    b = make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        a_pid, b_pid = await ca.bridge_pid(), await cb.bridge_pid()
        started = time.monotonic()
        os.kill(a_pid, signal.SIGTERM)
        await wait_gone(a_pid)
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        b.kill(signal.SIGKILL)
        await wait_gone(b_pid)
        assert time.monotonic() - started < 1.0


def test_stdin_eof_ends_the_bridge_and_stdout_carries_only_mcp(short_dir: Path) -> None:
    """Closing stdin ends the bridge in well under a second; every stdout line is JSON-RPC."""
    env = broker_env(short_dir)
    bridge = subprocess.Popen(
        [sys.executable, "-m", "claudepeers.bridge.main"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )
    try:
        assert bridge.stdin is not None and bridge.stdout is not None
        requests = [
            {"jsonrpc": "2.0", "id": 0, "method": "initialize",
             "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        ]
        bridge.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        bridge.stdin.flush()
        first = json.loads(bridge.stdout.readline())
        assert first["id"] == 0 and "claude/channel" in first["result"]["capabilities"]["experimental"]
        second = json.loads(bridge.stdout.readline())
        assert second["id"] == 1 and len(second["result"]["tools"]) == len(TOOLS)
        started = time.monotonic()
        bridge.stdin.close()
        rest = bridge.stdout.read()
        bridge.wait(5)
        assert time.monotonic() - started < 1.0
        assert rest == b""
        assert bridge.returncode == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


# ten plain clients in test_faults.py); ten real bridges, each importing the SDK, are slow.
@pytest.mark.parametrize("count", [3, pytest.param(10, marks=pytest.mark.slow)])
@asyncio_test
async def test_bridges_starting_at_once_start_one_broker(short_dir: Path, count: int) -> None:
    """With no broker running, the first bridges start one (a lock), and all of them register."""
    env = broker_env(short_dir)
    del env["CLAUDE_PEERS_NO_AUTOSTART"]
    agents = [FakeAgent(short_dir, f"p{index}", "codex", short_dir, dict(env)).start() for index in range(count)]
    socket_path = Path(env["CLAUDE_PEERS_SOCKET"])
    try:
        async with AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(open_bridge(agent, "codex-mcp-client", registered=False))
                      for agent in agents]
            await ready(*opened, patience=30)
            ids = {await my_id(bridge) for bridge in opened}
            assert len(ids) == count
            listing = await opened[0].text("list_peers", {"scope": "machine"})
            assert len(ids_in(listing)) == count - 1
            assert len(brokers_on(socket_path)) == 1
    finally:
        for agent in agents:
            agent.cleanup()
        for process in brokers_on(socket_path):
            process.terminate()
            process.wait(10)


def brokers_on(socket_path: Path) -> list[psutil.Process]:
    """Broker processes serving ``socket_path`` (started detached by autostart)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if str(socket_path) in cmdline and "broker" in " ".join(cmdline):
            found.append(process)
    return found


@asyncio_test
async def test_kill_peer_refuses_a_reused_pid(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """A recorded pid now held by a process with another start time is never signalled.

    The broker finds the start time changed (pid reused), so the peer counts as gone and
    kill_peer is refused with an isError text; the live process at that pid survives.
    """
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(b, "codex-mcp-client"):
        pass  # beta registered; its bridge is gone, its agent lives on
    broker_process.stop()
    # The store now says beta's agent started at another time: the live pid is "reused".
    with sqlite3.connect(broker_process.env["CLAUDE_PEERS_DB"]) as db:
        changed = db.execute("UPDATE peers SET agent_start = agent_start - 1000 WHERE name = 'beta'").rowcount
    assert changed == 1
    broker_process.start()
    async with open_bridge(a) as ca:
        result = await ca.call("kill_peer", {"peer_id": "beta"})
        assert result.is_error and "beta" in text_of(result), text_of(result)
    assert b.process.poll() is None


@asyncio_test
async def test_a_newer_bridge_of_the_same_agent_takes_over_for_good(make_agent: Callable) -> None:
    """Two bridges of one agent at once: the older steps aside; the newer keeps the id and the mail."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(b, "codex-mcp-client") as cb, open_bridge(a) as old:
        old_id = await my_id(old)
        old_pid = await old.bridge_pid()
        async with open_bridge(a) as new:
            assert await my_id(new) == old_id
            await wait_gone(old_pid)
            for body in ("one", "two"):
                await cb.text("send_message", {"to_id": "alpha", "message": body})
            items = await new.channel.wait_for(2)
            assert [body_of(n.content) for n in items] == ["one", "two"]
            assert old.channel.items == []


def test_sigterm_is_prompt_even_while_git_hangs(broker_process: BrokerProcess) -> None:
    """Registration's git runs in a thread that exit does not wait for."""
    short_dir = broker_process.base
    fake_bin = short_dir / "bin"
    fake_bin.mkdir()
    # The fake git announces itself on a FIFO: the test waits for that write, not a file.
    marker = short_dir / "git-started"
    os.mkfifo(marker)
    started_reading = os.open(marker, os.O_RDONLY | os.O_NONBLOCK)
    git_script = fake_bin / "git"
    git_script.write_text(f"#!/bin/sh\necho $$ > {marker}\nexec sleep 30\n")
    git_script.chmod(0o755)
    git_pid = 0
    env = {**broker_process.env, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    bridge = subprocess.Popen(
        [sys.executable, "-m", "claudepeers.bridge.main"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=short_dir,
    )
    try:
        assert bridge.stdin is not None and bridge.stdout is not None
        request = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "x", "version": "1"}}}
        bridge.stdin.write(json.dumps(request).encode() + b"\n")
        bridge.stdin.flush()
        assert json.loads(bridge.stdout.readline())["id"] == 0
        readable, _, _ = select.select([started_reading], [], [], 10)  # the bridge reached its git call
        assert readable, "the bridge never ran git"
        git_pid = int(os.read(started_reading, 64).decode().strip())
        started = time.monotonic()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(5)
        assert time.monotonic() - started < 1.0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
        os.close(started_reading)
        if git_pid:  # the fake git (now a sleep) we caused to start, by its pid
            try:
                os.kill(git_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
