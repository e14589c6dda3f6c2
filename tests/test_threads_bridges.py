"""Threads through real bridges and a real broker: delegation, waiting, history (DESIGN 8).

Each agent is a stand-in ``claude``/``codex`` process with a real ``claudepeers.bridge.main``
under it, spoken to by the mcp SDK's client (see ``bridge_support``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Callable

import pytest

from bridge_support import asyncio_test, my_id, open_bridge, ready, text_of
from conftest import BrokerProcess


def message_number(sent: str) -> int:
    """The ``#N`` a send_message result names."""
    match = re.match(r"Message #(\d+) ", sent)
    assert match, sent
    return int(match.group(1))


@asyncio_test
async def test_delegation_round_trip_through_both_bridges_shows_everything_once(make_agent: Callable) -> None:
    """A (Codex) sends B (Claude with a channel) a task and waits; B replies; A's wait returns
    the reply in a framed result; nothing is shown twice; a third peer cannot join the thread;
    read_thread and search_messages then show each side its own part."""
    lead = make_agent("lead", "codex")
    worker = make_agent("worker", "claude", channels=True)
    other = make_agent("other", "codex")
    async with open_bridge(lead, "codex-mcp-client", registered=False) as a, \
            open_bridge(worker, registered=False) as b, open_bridge(other, "codex-mcp-client", registered=False) as c:
        await ready(a, b, c)
        lead_id = await my_id(a)
        sent = await a.text("send_message", {"to_id": "worker", "message": "task: port the parser, branch p1"})
        task = message_number(sent)
        waiting = asyncio.ensure_future(a.call("wait_for_reply", {"message_id": task, "timeout_seconds": 30}))
        # The bridge passes its agent's calls to the broker in order on one connection: once a
        # later call is answered, the wait is armed (else the reply would be held, 'queued').
        await a.text("whoami")
        [note] = await b.channel.wait_for(1)
        assert (note.meta["message_id"], note.meta["thread_id"]) == (str(task), str(task))
        assert "reply_to" not in note.meta
        answer = await b.text("send_message", {"to_id": note.meta["from_id"], "reply_to": task,
                                                "message": "done: parser ported, commit abc123"})
        assert f"(a reply in thread #{task})" in answer and " shown to lead " in answer
        result = await waiting
        text = text_of(result)
        assert not result.is_error, text
        assert text.startswith(f"1 reply in thread #{task}:")
        assert "done: parser ported, commit abc123" in text
        assert f"[reply to message #{task} in thread #{task}]" in text
        reply = message_number(answer)
        assert f"wait_for_reply(message_id={reply})" in text
        # Shown once: not in the next tool result, not by check_messages, not by another wait.
        assert "new messages from other agents" not in await a.text("whoami")
        assert await a.text("check_messages") == "No new messages."
        again = await a.text("wait_for_reply", {"message_id": task, "timeout_seconds": 0})
        assert "done: parser ported" not in again and f"Already shown to you (not repeated here): #{reply}" in again
        # A third peer cannot reply into (or wait in, or read) a thread that is not its own.
        for tool, arguments in (("send_message", {"to_id": "worker", "message": "me too", "reply_to": task}),
                                ("send_message", {"to_id": "worker", "message": "nope", "reply_to": 999_999}),
                                ("wait_for_reply", {"message_id": task, "timeout_seconds": 0}),
                                ("read_thread", {"thread_id": task})):
            refused = await c.call(tool, arguments)
            assert refused.is_error and "you have no message #" in text_of(refused), text_of(refused)
        # History: each side's own part of the thread, and a search over one's own mail.
        thread = await a.text("read_thread", {"thread_id": reply})
        assert thread.startswith(f"Thread #{task}, 2 messages, oldest first")
        assert "you -> worker (" in thread and f"worker ({await my_id(b)}) -> you" in thread
        assert thread.index("task: port the parser") < thread.index("done: parser ported")
        found = await b.text("search_messages", {"text": "parser PORT"})
        assert found.startswith("2 messages, newest first") and f"#{reply} " in found and f"#{task} " in found
        assert (await c.text("search_messages", {"text": "parser"})).startswith("No message of yours")
        assert len(b.channel.items) == 1 and lead_id


@asyncio_test
async def test_a_wait_times_out_in_its_own_time_not_the_call_deadline(make_agent: Callable) -> None:
    """A wait longer than the bridge's call deadline is not cut by it; with no reply it says so
    after its own timeout; a timeout over the broker's bound is refused, naming the setting."""
    lead = make_agent("lead", "codex")
    worker = make_agent("worker", "codex")
    async with open_bridge(lead, "codex-mcp-client", env={"CLAUDE_PEERS_CALL_TIMEOUT_SECONDS": "0.5"}) as a, \
            open_bridge(worker, "codex-mcp-client"):
        task = message_number(await a.text("send_message", {"to_id": "worker", "message": "anything?"}))
        started = asyncio.get_running_loop().time()
        timed_out = await a.text("wait_for_reply", {"message_id": task, "timeout_seconds": 1.5})
        elapsed = asyncio.get_running_loop().time() - started
        assert timed_out.startswith(f"No reply in thread #{task} within 1.5 s"), timed_out
        assert 1.4 < elapsed < 10
        over = await a.call("wait_for_reply", {"message_id": task, "timeout_seconds": 601})
        assert over.is_error and "CLAUDE_PEERS_MAX_WAIT_SECONDS" in text_of(over)


@pytest.mark.slow
@asyncio_test
async def test_a_wait_holds_across_a_broker_restart(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """The broker stops while A waits: A's bridge asks again once it has reconnected, and the
    reply B sends to the new broker ends A's wait."""
    lead = make_agent("lead", "codex")
    worker = make_agent("worker", "codex")
    async with open_bridge(lead, "codex-mcp-client") as a, open_bridge(worker, "codex-mcp-client") as b:
        task = message_number(await a.text("send_message", {"to_id": "worker", "message": "long task"}))
        waiting = asyncio.ensure_future(a.call("wait_for_reply", {"message_id": task, "timeout_seconds": 40}))
        await asyncio.sleep(0.3)  # the wait reaches the broker (nothing to subscribe to from here)
        broker_process.stop()
        broker_process.start()
        await ready(b, patience=20)
        sent = await b.text("send_message", {"to_id": "lead", "reply_to": task, "message": "finished after the restart"})
        assert "(a reply in thread" in sent
        result = await asyncio.wait_for(waiting, 30)
        assert not result.is_error, text_of(result)
        assert "finished after the restart" in text_of(result)
        assert await a.text("check_messages") == "No new messages."
