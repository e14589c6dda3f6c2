"""Real bridges under stand-in Claude Code sessions: a channel push is shown only when confirmed.

The stand-in accepts the channel by writing Claude Code's transcript line (see
``bridge_support.Inbox``) or skips it, as Claude Code does with the gate off, in ``-p`` mode,
with ``--channels server:...`` or telemetry disabled: it receives the notification and
writes nothing. The confirmation bound is short here (0.4 s) to keep the tests quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from bridge_support import asyncio_test, open_bridge, ready, started_agents, transcript_line
from conftest import BrokerProcess
from raw_mcp import StdioBridge

BOUND = "0.4"
#: The bound of a session's first push while it has no transcript (short here too).
FIRST_BOUND = "0.8"


@pytest.fixture
def make_agent(broker_process: BrokerProcess) -> Any:
    """Start stand-in agents (with a short confirmation bound); all are ended afterwards."""
    with started_agents(broker_process, CLAUDE_PEERS_CHANNEL_CONFIRM_SECONDS=BOUND,
                        CLAUDE_PEERS_CHANNEL_FIRST_CONFIRM_SECONDS=FIRST_BOUND) as make:
        yield make


def delivery_of(listing: str, name: str) -> str:
    """The 'Gets mail by' line of one peer in a list_peers text."""
    block = listing.split(f"Name: {name}\n", 1)[1].split("\n\n", 1)[0]
    return block.split("Gets mail by: ", 1)[1].split("\n", 1)[0]


@asyncio_test
async def test_a_confirmed_channel_is_shown_and_says_so(make_agent: Callable) -> None:
    """The stand-in accepts the push: the sender hears shown; list_peers says channel (confirmed) and the era."""
    a, b = make_agent("alpha", channels=True), make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "confirmed one"})
        assert " shown to alpha " in sent, sent
        [note] = await ca.channel.wait_for(1)
        assert note.content == "confirmed one"
        listing = await cb.text("list_peers", {"scope": "machine"})
        assert delivery_of(listing, "alpha") == "channel (confirmed); MCP 2025-11-25"
        assert "[claude-peers message" not in await ca.text("whoami")  # nothing waits inline


@asyncio_test
async def test_a_skipped_channel_falls_back_to_the_next_tool_result_once(make_agent: Callable) -> None:
    """No confirmation: the sender hears why it waits, the next tool result shows it once, and
    later mail goes inline without a channel notification."""
    a, b = make_agent("alpha", channels=True, accepts=False), make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "first, skipped"})
        assert "queued for alpha" in sent and "channel push not confirmed" in sent, sent
        shown = await ca.text("whoami")
        assert shown.count("\u2502 first, skipped") == 1
        later = await cb.text("send_message", {"to_id": "alpha", "message": "second, inline"})
        assert "queued for alpha" in later and "channel push not confirmed" in later, later
        assert len(ca.channel.items) == 1  # the second was never pushed
        again = await ca.text("whoami")
        assert "first, skipped" not in again and again.count("\u2502 second, inline") == 1
        listing = await cb.text("list_peers", {"scope": "machine"})
        assert delivery_of(listing, "alpha").startswith("channel (unconfirmed, falling back to inline)")


@asyncio_test
async def test_a_late_confirmation_is_never_shown_again_inline(make_agent: Callable) -> None:
    """The push times out and waits inline; then Claude Code's line appears: the message counts as
    shown (the sender can see it) and no tool result shows it a second time."""
    a, b = make_agent("alpha", channels=True, accepts=False), make_agent("beta", "codex")
    async with open_bridge(a, registered=False) as ca, open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        sent = await cb.text("send_message", {"to_id": "alpha", "message": "slow to confirm"})
        assert "channel push not confirmed" in sent, sent
        [note] = await ca.channel.wait_for(1)
        a.transcript.parent.mkdir(parents=True, exist_ok=True)
        with open(a.transcript, "ab") as handle:
            handle.write(transcript_line(note.content, note.meta))
        listing = ""
        for _ in range(200):  # each list_peers is a broker round trip, which paces the loop
            listing = await cb.text("list_peers", {"scope": "machine"})
            if delivery_of(listing, "alpha").startswith("channel (confirmed)"):
                break
        assert delivery_of(listing, "alpha").startswith("channel (confirmed)"), listing
        assert "slow to confirm" not in await ca.text("whoami")
        assert "No new messages." in await ca.text("check_messages")


@asyncio_test
async def test_a_first_line_written_late_still_confirms_the_first_push(make_agent: Callable) -> None:
    """Claude Code writes a new session's first transcript line seconds after accepting: the
    first push waits the longer bound, so the sender hears shown and nothing falls back."""
    a, b = make_agent("alpha", channels=True, accepts=False), make_agent("beta", "codex")
    slow = {"CLAUDE_PEERS_CHANNEL_FIRST_CONFIRM_SECONDS": "20"}
    async with open_bridge(a, registered=False, env=slow) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        assert not a.transcript.exists()
        sending = asyncio.ensure_future(cb.text("send_message", {"to_id": "alpha", "message": "first of a session"}))
        [note] = await ca.channel.wait_for(1)
        # Later than the usual bound (0.4 s): Claude Code's own delay, a real process's time.
        await asyncio.sleep(1.0)
        assert not sending.done()
        a.transcript.parent.mkdir(parents=True, exist_ok=True)
        with open(a.transcript, "ab") as handle:
            handle.write(transcript_line(note.content, note.meta))
        sent = await sending
        assert " shown to alpha " in sent, sent
        assert "first of a session" not in await ca.text("whoami")


@asyncio_test
async def test_a_restarted_bridge_does_not_show_again_what_the_transcript_holds(make_agent: Callable) -> None:
    """A bridge pushed a message, the agent got it, and the bridge died before the broker had
    the acknowledgement: its successor finds the message in the session's transcript, so the
    broker's push again is answered shown and the agent never sees it twice."""
    a, b = make_agent("alpha", channels=True, accepts=False), make_agent("beta", "codex")
    async with open_bridge(b, "codex-mcp-client", registered=False) as cb:
        async with open_bridge(a, registered=False) as ca:
            await ready(ca, cb)
            sent = await cb.text("send_message", {"to_id": "alpha", "message": "got it before the crash"})
            assert "channel push not confirmed" in sent, sent
            [note] = await ca.channel.wait_for(1)
            pid = await ca.bridge_pid()
            os.kill(pid, signal.SIGKILL)  # gone before anything acknowledged the message
        # What Claude Code had written when it accepted the push.
        a.transcript.parent.mkdir(parents=True, exist_ok=True)
        with open(a.transcript, "ab") as handle:
            handle.write(transcript_line(note.content, note.meta))
        async with open_bridge(a, registered=False) as again:
            await ready(again)
            assert "got it before the crash" not in await again.text("whoami")
            assert "No new messages." in await again.text("check_messages")
            assert again.channel.items == []


def test_a_client_of_the_2026_era_alone_is_served_inline(make_agent: Callable, short_dir: Path) -> None:
    """server/discover is refused; a client that then goes on in the 2026 envelope is served,
    and its mail comes in tool results (a modern connection has no channel path)."""
    a, b = make_agent("alpha", channels=True), make_agent("beta", "codex")
    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": "test"},
                "io.modelcontextprotocol/clientCapabilities": {}}
    modern = StdioBridge(a.socket_path, short_dir / "m.pid", a.env, a.cwd)
    classic = StdioBridge(b.socket_path, short_dir / "c.pid", b.env, b.cwd, client_name="codex-mcp-client")
    try:
        refused = modern.request("server/discover", {"_meta": envelope})
        assert refused["error"]["code"] == -32601
        tools = modern.request("tools/list", {"_meta": envelope})
        assert "send_message" in json.dumps(tools["result"])
        whoami = modern.request("tools/call", {"name": "whoami", "arguments": {}, "_meta": envelope})
        assert "ID: " in json.dumps(whoami["result"])
        classic.initialize()
        sent = classic.text("send_message", {"to_id": "alpha", "message": "to a modern client"})
        assert "queued for alpha" in sent, sent
        shown = modern.request("tools/call", {"name": "check_messages", "arguments": {}, "_meta": envelope})
        assert "to a modern client" in json.dumps(shown["result"]) and modern.channel.empty()
        listing = classic.text("list_peers", {"scope": "machine"})
        assert delivery_of(listing, "alpha") == "inline (MCP 2026-07-28: no channel path)"
    finally:
        modern.close()
        classic.close()
