"""Real bridges (``python -m claudepeers.bridge.main``) under fake agents, against a real broker:
peers, scopes, messages pushed and inline, bad arguments, delivery modes, TCP with the token.
(How bridges end, restart and take over: ``test_bridge_processes.py``.)

Each bridge is the child of a stand-in ``claude``/``codex`` process and talks MCP over
stdio with the mcp SDK's client (legacy handshake, a NotificationBinding for the channel).
"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Callable


from bridge_support import FakeAgent, asyncio_test, body_of, git, ids_in, my_id, open_bridge, ready, text_of
from conftest import BrokerProcess, broker_env


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
