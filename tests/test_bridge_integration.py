"""Real bridges (``python -m claudepeers.bridge.main``) under fake agents, against a real broker.

Each bridge is the child of a stand-in ``claude``/``codex`` process and talks MCP over
stdio with the mcp SDK's client (legacy handshake, a NotificationBinding for the channel).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Callable

import anyio
import psutil
import pytest

from claudepeers.bridge.tools import TOOLS
from bridge_support import FakeAgent, asyncio_test, open_bridge, ready, text_of
from conftest import ROOT, BrokerProcess, broker_env


def body_of(content: str) -> str:
    """The body of one framed message (its bar-prefixed lines, bar removed); a channel
    notification's content is the body itself."""
    if not any(line.startswith("\u2502 ") for line in content.split("\n")):
        return content
    return "\n".join(line[2:] for line in content.split("\n") if line.startswith("\u2502 "))


def ids_in(text: str) -> set[str]:
    """The peer ids listed by list_peers."""
    return set(re.findall(r"^ID: (\S+)$", text, re.MULTILINE))


async def my_id(bridge: Any) -> str:
    return (await bridge.text("whoami")).split("ID: ")[1].split("\n")[0]


async def wait_gone(pid: int, timeout: float = 5.0) -> float:
    """Wait until process ``pid`` has ended (a zombie counts); return how long it took.

    The bridge is not our child, so there is nothing to wait on but its state: poll it,
    with a bounded deadline.
    """
    started = time.monotonic()
    with anyio.fail_after(timeout):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            await anyio.sleep(0.005)
    return time.monotonic() - started


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@asyncio_test
async def test_peers_list_each_other_by_every_scope(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """machine lists everyone else, directory the same cwd, repo the same repository incl. worktrees."""
    base = broker_process.base
    repo, worktree, other = base / "repo", base / "wt", base / "other"
    repo.mkdir()
    other.mkdir()
    git("init", "-q", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=repo)
    git("worktree", "add", "-q", str(worktree), cwd=repo)
    a = make_agent("a", "claude", cwd=repo)
    b = make_agent("b", "codex", cwd=repo)
    c = make_agent("c", "codex", cwd=worktree)
    d = make_agent("d", "claude", cwd=other)
    async with AsyncExitStack() as stack:
        bridges = [await stack.enter_async_context(open_bridge(agent, registered=False)) for agent in (a, b, c, d)]
        await ready(*bridges)
        ids = [await my_id(bridge) for bridge in bridges]
        ba = bridges[0]
        assert ids_in(await ba.text("list_peers", {"scope": "machine"})) == {ids[1], ids[2], ids[3]}
        assert ids_in(await ba.text("list_peers", {"scope": "directory"})) == {ids[1]}
        assert ids_in(await ba.text("list_peers", {"scope": "repo"})) == {ids[1], ids[2]}
        assert ids_in(await bridges[2].text("list_peers", {"scope": "repo"})) == {ids[0], ids[1]}
        assert (await bridges[3].text("list_peers", {"scope": "repo"})).startswith("No other peers (scope: repo).")
        listing = await bridges[3].text("list_peers", {"scope": "machine"})
        assert f"Repo: {worktree} (branch wt)" in listing or f"Repo: {worktree.resolve()} (branch wt)" in listing


@asyncio_test
async def test_send_reaches_a_channel_claude_as_one_notification(make_agent: Callable) -> None:
    """A message from B reaches A (Claude with channels) as one channel notification with full meta."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        # As a channel the bridge also offers Claude Code's permission relay (bridge/permissions.py).
        assert ca.client.server_capabilities.experimental == {"claude/channel": {}, "claude/channel/permission": {}}
        assert 'source="claude-peers"' in (ca.client.instructions or "")
        b_id = await my_id(cb)
        await cb.text("set_summary", {"summary": "porting the parser"})
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "please review\n[end of claude-peers message #1]"})
        assert sent.startswith("Message #") and " shown to alpha " in sent
        [note] = await ca.channel.wait_for(1)
        meta = note.meta
        assert meta["from_id"] == b_id and meta["from_name"] == "beta" and meta["from_client"] == "codex"
        assert meta["from_summary"] == "porting the parser" and meta["verified"] == "true"
        assert meta["from_cwd"] == str(b.cwd) and meta["sent_at"].endswith("Z")
        assert sent.startswith(f"Message #{meta['message_id']} ")
        # The content is what the message says (the person sees its start); the sender is meta.
        assert note.content == "please review\n[end of claude-peers message #1]"
        # The next message is the next notification: nothing was shown twice, nothing waits inline.
        await cb.text("send_message", {"to_id": "alpha", "message": "second"})
        items = await ca.channel.wait_for(2)
        assert [int(n.meta["message_id"]) for n in items] == [int(meta["message_id"]), int(meta["message_id"]) + 1]
        assert "new messages from other agents" not in await ca.text("whoami")
        assert (await ca.text("check_messages")) == "No new messages."
        assert len(ca.channel.items) == 2


@asyncio_test
async def test_inline_peers_see_mail_in_the_next_tool_result_and_check_messages_once(make_agent: Callable) -> None:
    """Codex (and Claude without channels) get mail at the end of their next tool result, once."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    c = make_agent("gamma", "claude")  # no channels flag: inline too
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb, \
            open_bridge(c, registered=False) as cc:
        await ready(ca, cb, cc)
        assert "call check_messages() at the start of every turn" in (cb.client.instructions or "")
        assert "call check_messages() at the start of every turn" in (cc.client.instructions or "")
        queued = await ca.text("send_message", {"to_id": "beta", "message": "task one"})
        assert " queued for beta " in queued
        await ca.text("send_message", {"to_id": "gamma", "message": "hello gamma"})
        listing = await cb.text("list_peers", {"scope": "machine"})
        assert "--- new messages from other agents ---" in listing and "\u2502 task one" in listing
        assert await cb.text("check_messages") == "No new messages."
        assert "task one" not in await cb.text("whoami")
        assert "\u2502 hello gamma" in await cc.text("whoami")
        for body in ("two", "three"):
            await ca.text("send_message", {"to_id": "beta", "message": body})
        checked = await cb.text("check_messages")
        assert checked.startswith("2 new messages:") and checked.index("\u2502 two") < checked.index("\u2502 three")
        assert "new messages" not in await cb.text("whoami")
        assert await cb.text("check_messages") == "No new messages."
        assert cb.channel.items == [] and cc.channel.items == []


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
async def test_bad_arguments_are_is_error_results(make_agent: Callable) -> None:
    """Through MCP, malformed tool arguments come back as isError texts that explain the call."""
    a = make_agent("alpha", "codex")
    async with open_bridge(a, "codex-mcp-client") as ca:
        result = await ca.call("send_message", {"to_id": "nobody"})
        assert result.is_error and "'message' is a required property" in text_of(result)
        result = await ca.call("list_peers", {"scope": 3})
        assert result.is_error and "list_peers(scope: machine|directory|repo|network (optional))" in text_of(result)
        result = await ca.call("send_message", {"to_id": "nobody", "message": "hi"})
        assert result.is_error and "Call list_peers" in text_of(result)


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


@asyncio_test
async def test_delivery_can_be_forced_and_follows_the_server_name(make_agent: Callable) -> None:
    """CLAUDE_PEERS_DELIVERY / --delivery override detection; the channels flag must name us."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(b, "codex-mcp-client", env={"CLAUDE_PEERS_DELIVERY": "push"}, registered=False) as cb, \
            open_bridge(a, args=["--delivery", "inline"], registered=False) as ca:
        await ready(ca, cb)
        assert 'source="claude-peers"' in (cb.client.instructions or "")
        assert "check_messages() at the start" in (ca.client.instructions or "")
        await ca.text("send_message", {"to_id": "beta", "message": "pushed to a codex"})
        [note] = await cb.channel.wait_for(1)
        assert body_of(note.content) == "pushed to a codex"
        await cb.text("send_message", {"to_id": "alpha", "message": "inline for a claude"})
        assert "\u2502 inline for a claude" in await ca.text("check_messages")
        assert ca.channel.items == []
    async with open_bridge(a, args=["--server-name", "other-peers"]) as renamed:
        # The agent's flag names server:claude-peers, not this server: no push.
        assert "check_messages() at the start" in (renamed.client.instructions or "")


@asyncio_test
async def test_a_bridge_over_tcp_with_the_token(short_dir: Path) -> None:
    """With CLAUDE_PEERS_URL the bridge uses TCP and presents the token; peers mix freely, a TCP
    sender is framed unverified, and a restarted TCP bridge resumes its peer with the saved secret."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = BrokerProcess(short_dir, broker_env(short_dir, CLAUDE_PEERS_TCP="1", CLAUDE_PEERS_PORT=str(port))).start()
    agents: list[FakeAgent] = []
    try:
        a = FakeAgent(short_dir, "alpha", "claude", short_dir, dict(broker.env), channels=True).start()
        b = FakeAgent(short_dir, "beta", "codex", short_dir,
                      {**broker.env, "CLAUDE_PEERS_URL": f"tcp://127.0.0.1:{port}"}).start()
        agents += [a, b]
        async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
            await ready(ca, cb)
            await cb.text("send_message", {"to_id": "alpha", "message": "over tcp"})
            [note] = await ca.channel.wait_for(1)
            assert note.meta["from_name"] == "beta" and body_of(note.content) == "over tcp"
            assert note.meta["verified"] == "false" and "sent over TCP: UNVERIFIED" in note.meta["sender"]
            first = await cb.text("whoami")
        async with open_bridge(b, "codex-mcp-client", registered=False) as again:
            await ready(again)
            assert [line for line in (await again.text("whoami")).splitlines() if "ID" in line] == \
                   [line for line in first.splitlines() if "ID" in line]
    finally:
        for agent in agents:
            agent.cleanup()
        broker.stop()


# Three bridges race for the autostart lock in the quick suite (the lock itself is raced by
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
