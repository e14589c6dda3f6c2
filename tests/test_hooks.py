"""``claude-peers hook <event>`` run as the agents run it, against a real broker and real bridges.

Each hook runs as the child (through ``/bin/sh -c``) of a stand-in ``claude``/``codex``
process whose peer a real bridge registered, with the hook's JSON on stdin.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable


from bridge_support import asyncio_test, open_bridge, ready
from conftest import BrokerProcess, broker_env
from hook_support import make_agent  # noqa: F401 - a fixture
from hook_support import HookAgent, hook_log, payload, run_hook




def context_of(run: Any, event: str) -> str:
    """The additionalContext of a context hook's output (asserting its shape)."""
    assert run.status == 0, run.stderr
    out = run.output()
    assert out is not None, "the hook printed nothing"
    assert set(out) == {"hookSpecificOutput"}
    assert out["hookSpecificOutput"]["hookEventName"] == event
    return out["hookSpecificOutput"]["additionalContext"]


@asyncio_test
async def test_mail_appears_once_in_the_prompt_hook_and_is_acknowledged(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """Two messages for a Codex peer appear once, in order, in UserPromptSubmit output; the next run prints nothing."""
    a = make_agent("alpha", "codex")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "codex-mcp-client", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        for body in ("first task", "second task"):
            sent = await cb.text("send_message", {"to_id": "alpha", "message": body})
            assert "queued" in sent, sent
        context = context_of(await run_hook(a, "UserPromptSubmit"), "UserPromptSubmit")
        assert context.count("\u2502 first task") == 1 and context.count("\u2502 second task") == 1
        assert context.index("first task") < context.index("second task")
        assert 'from peer "beta"' in context and "2 new messages" in context
        again = await run_hook(a, "UserPromptSubmit")
        assert (again.status, again.stdout) == (0, "")
        # The bridge was told (ShownElsewhere): it drops its held copies and never shows them.
        assert await ca.text("check_messages") == "No new messages."
        assert "showed messages" in hook_log(broker_process.base)


@asyncio_test
async def test_session_start_under_claude_without_channels_shows_mail(make_agent: Callable) -> None:
    """Claude Code without channels (inline bridge): SessionStart output carries the mail, then nothing."""
    a = make_agent("alpha", "claude")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "welcome back"})
        run = await run_hook(a, "SessionStart", payload("SessionStart", source="resume"))
        assert "\u2502 welcome back" in context_of(run, "SessionStart")
        assert (await run_hook(a, "UserPromptSubmit")).stdout == ""


@asyncio_test
async def test_no_mail_prints_nothing_and_exits_0(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """A registered peer without mail: empty stdout and stderr, exit 0, nothing logged."""
    a = make_agent("alpha", "codex")
    async with open_bridge(a, "codex-mcp-client"):
        for event in ("UserPromptSubmit", "SessionStart"):
            run = await run_hook(a, event)
            assert (run.status, run.stdout, run.stderr) == (0, "", "")
    assert hook_log(broker_process.base) == ""


@asyncio_test
async def test_an_agent_without_a_peer_gets_nothing(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """No bridge ever registered this agent session: the hook prints nothing and logs nothing."""
    a = make_agent("alpha", "claude")
    run = await run_hook(a, "UserPromptSubmit")
    assert (run.status, run.stdout) == (0, "")
    assert hook_log(broker_process.base) == ""


@asyncio_test
async def test_a_dead_broker_gives_exit_0_and_a_log_line(make_agent: Callable, broker_process: BrokerProcess) -> None:
    """With the broker stopped, the hook neither fails the turn nor starts a broker: exit 0, one log line."""
    a = make_agent("alpha", "codex")
    broker_process.stop()
    run = await run_hook(a, "UserPromptSubmit")
    assert (run.status, run.stdout, run.stderr) == (0, "", "")
    lines = hook_log(broker_process.base).splitlines()
    assert len(lines) == 1 and "hook UserPromptSubmit" in lines[0] and "no broker answers" in lines[0]
    assert not broker_process.socket_path.exists()


@asyncio_test
async def test_messages_pushed_through_the_channel_are_not_repeated(make_agent: Callable) -> None:
    """Claude with channels got the message as a notification: the prompt hook does not show it again."""
    a = make_agent("alpha", "claude", channels=True)
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "pushed once"})
        [note] = await ca.channel.wait_for(1)
        assert "pushed once" in note.content
        for event in ("UserPromptSubmit", "SessionStart"):
            run = await run_hook(a, event)
            assert (run.status, run.stdout) == (0, "")


@asyncio_test
async def test_messages_the_bridge_showed_inline_are_not_repeated(make_agent: Callable) -> None:
    """A message the bridge showed through check_messages is not shown by the next prompt hook."""
    a = make_agent("alpha", "codex")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "codex-mcp-client", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "read in a tool"})
        assert "read in a tool" in await ca.text("check_messages")
        run = await run_hook(a, "UserPromptSubmit")
        assert (run.status, run.stdout) == (0, "")


@asyncio_test
async def test_stop_guard_blocks_the_turn_end_once_while_mail_waits(make_agent: Callable) -> None:
    """Stop: unread mail blocks with the messages as the reason; stop_hook_active and no mail let it end."""
    a = make_agent("alpha", "codex")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "codex-mcp-client", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        assert (await run_hook(a, "Stop", payload("Stop", stop_hook_active=False))).stdout == ""
        await cb.text("send_message", {"to_id": "alpha", "message": "wait, one more thing"})
        looping = await run_hook(a, "Stop", payload("Stop", stop_hook_active=True))
        assert (looping.status, looping.stdout) == (0, "")
        blocked = await run_hook(a, "Stop", payload("Stop", stop_hook_active=False))
        out = blocked.output()
        assert blocked.status == 0 and out is not None and out["decision"] == "block"
        assert "\u2502 wait, one more thing" in out["reason"]
        after = await run_hook(a, "Stop", payload("Stop", stop_hook_active=True))
        assert after.stdout == ""
        assert await ca.text("check_messages") == "No new messages."


@asyncio_test
async def test_under_claude_code_the_stop_guard_blocks_by_exit_status_2(make_agent: Callable) -> None:
    """Under Claude Code the block is exit 2 with the reason on stderr and nothing on stdout:
    2.1.332 gives a JSON block's reason to the model twice, an exit-2 reason once."""
    a = make_agent("alpha", "claude")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "claude-code", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "before you go"})
        blocked = await run_hook(a, "Stop", payload("Stop", stop_hook_active=False))
        assert (blocked.status, blocked.stdout) == (2, "")
        assert blocked.stderr.startswith("Peer messages arrived") and "\u2502 before you go" in blocked.stderr
        assert await ca.text("check_messages") == "No new messages."


@asyncio_test
async def test_stop_guard_blocks_at_most_three_times_a_turn(make_agent: Callable) -> None:
    """Mail too long to show keeps waiting: Stop blocks 3 times, then lets the turn end; a new prompt resets."""
    a = make_agent("alpha", "codex")
    b = make_agent("beta", "codex")
    async with open_bridge(a, "codex-mcp-client", registered=False) as ca, \
            open_bridge(b, "codex-mcp-client", registered=False) as cb:
        await ready(ca, cb)
        await cb.text("send_message", {"to_id": "alpha", "message": "long " * 3000})
        stop = payload("Stop", stop_hook_active=False)
        decisions = [(await run_hook(a, "Stop", stop)).output() for _ in range(4)]
        assert [d and d["decision"] for d in decisions] == ["block", "block", "block", None]
        assert "check_messages" in decisions[0]["reason"]
        prompt = context_of(await run_hook(a, "UserPromptSubmit"), "UserPromptSubmit")
        assert "[1 claude-peers message waiting, too long to show here" in prompt
        assert (await run_hook(a, "Stop", stop)).output()["decision"] == "block"
        assert "long long" in await ca.text("check_messages")


@asyncio_test
async def test_a_hook_over_tcp_cannot_attach_to_a_peer_registered_on_the_socket(short_dir: Path) -> None:
    """With CLAUDE_PEERS_URL the hook presents the token over TCP, but the broker does not let a
    TCP client attach to a kernel-verified peer (issue 11): it shows nothing, and the mail waits
    for the hook on the socket, which shows and acknowledges it."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    broker = BrokerProcess(short_dir, broker_env(short_dir, CLAUDE_PEERS_TCP="1", CLAUDE_PEERS_PORT=str(port))).start()
    agents = [HookAgent(short_dir, name, "codex", short_dir, dict(broker.env)).start() for name in ("alpha", "beta")]
    try:
        async with open_bridge(agents[0], "codex-mcp-client", registered=False) as ca, \
                open_bridge(agents[1], "codex-mcp-client", registered=False) as cb:
            await ready(ca, cb)
            await cb.text("send_message", {"to_id": "alpha", "message": "over tcp"})
            tcp = {"CLAUDE_PEERS_URL": f"tcp://127.0.0.1:{port}"}
            assert (await run_hook(agents[0], "UserPromptSubmit", env=tcp)).stdout == ""
            run = await run_hook(agents[0], "UserPromptSubmit")
            assert "\u2502 over tcp" in context_of(run, "UserPromptSubmit")
            assert (await run_hook(agents[0], "UserPromptSubmit")).stdout == ""
    finally:
        for agent in agents:
            agent.cleanup()
        broker.stop()
