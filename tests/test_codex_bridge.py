"""The bridge of an interactive Codex thread, under a stand-in app-server (default suite).

The stand-in tree: a process named ``codex`` run as ``codex app-server --listen unix://``
(the daemon every interactive thread runs in), its bridges as children, and another
``codex`` process with the same CODEX_HOME standing for the person's TUI. The same
stand-in executable, run as ``codex queue ...``, records the call in ``queue.log``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import pytest

from bridge_support import asyncio_test, open_bridge, started_agents, text_of
from conftest import BrokerProcess
from hook_support import HookAgent, payload, run_hook

THREAD_A = "01a23386-f16d-7791-a4fa-be56ab23ec4b"
THREAD_B = "01a23388-1881-7d13-9d08-182c9b1d0a72"
APP_SERVER_ARGS = ["app-server", "--listen", "unix://", "--managed-daemon"]


@pytest.fixture
def codex_tree(broker_process: BrokerProcess) -> Iterator[Callable[..., HookAgent]]:
    """Start stand-in Codex processes sharing one CODEX_HOME; all are ended afterwards."""
    with started_agents(broker_process, HookAgent, "codex", CODEX_HOME=str(broker_process.base / "codex-home")) as make:
        yield lambda name, args: make(name, args=args)


def queue_calls(agent: HookAgent) -> list[dict[str, Any]]:
    """The ``codex queue`` runs the stand-in recorded, oldest first."""
    log = agent.base / f"bin-{agent.name}" / "queue.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def call(bridge: Any, tool: str, thread: str, arguments: dict[str, Any] | None = None) -> str:
    """A tool call as Codex makes it: the thread id in ``_meta``; returns the text (must succeed)."""
    result = await bridge.client.call_tool(tool, arguments or {}, meta={"threadId": thread})
    assert not result.is_error, text_of(result)
    return text_of(result)


@asyncio_test
async def test_threads_of_one_app_server_are_peers_and_an_idle_one_is_woken_once(codex_tree: Callable) -> None:
    """Two threads: two peers. Mail for one is answered woke, with one codex queue of a notice
    naming the thread; the prompt hook of that thread shows the mail; nothing is queued twice."""
    app = codex_tree("app", APP_SERVER_ARGS)
    codex_tree("tui", [])
    async with open_bridge(app, "codex-mcp-client", registered=False) as thread_a, \
            open_bridge(app, "codex-mcp-client", registered=False) as thread_b:
        me = await call(thread_a, "set_name", THREAD_A, {"name": "coder"})
        assert "coder" in me
        listing = await call(thread_b, "list_peers", THREAD_B, {"scope": "machine"})
        assert "coder" in listing and "codex" in listing  # the other thread, as its own peer
        sent = await call(thread_b, "send_message", THREAD_B, {"to_id": "coder", "message": "please review #12"})
        assert "woken" in sent, sent
        calls = queue_calls(app)
        assert len(calls) == 1
        argv = calls[0]["argv"]
        assert argv[:3] == ["queue", "--thread", THREAD_A] and argv[3] == "--message"
        assert argv[4].startswith("[claude-peers] 1 new peer message from ") and "check_messages" in argv[4]
        assert calls[0]["env"]["CODEX_HOME"] == str(app.base / "codex-home")
        # The queued turn fires the prompt hook of thread A: it shows the mail and acknowledges it.
        run = await run_hook(app, "UserPromptSubmit", payload("UserPromptSubmit", session_id=THREAD_A,
                                                              prompt=argv[4]))
        shown = json.loads(run.stdout)["hookSpecificOutput"]["additionalContext"]
        assert "\u2502 please review #12" in shown
        assert await call(thread_a, "check_messages", THREAD_A) == "No new messages."
        await call(thread_b, "send_message", THREAD_B, {"to_id": "coder", "message": "and #13"})
        assert len(queue_calls(app)) == 2  # a new message after the first was shown: a new notice


@asyncio_test
async def test_no_queue_once_the_person_left_and_never_for_codex_exec(codex_tree: Callable) -> None:
    """The TUI has exited: the message waits (queued), no codex queue. A codex exec session
    (one process per session) registers at once and is never woken."""
    app = codex_tree("app", APP_SERVER_ARGS)
    tui = codex_tree("tui", [])
    exec_agent = codex_tree("exec", ["exec", "hello"])
    async with open_bridge(app, "codex-mcp-client", registered=False) as thread_a, \
            open_bridge(exec_agent, "codex-mcp-client") as one_shot:
        await call(thread_a, "set_name", THREAD_A, {"name": "coder"})
        await one_shot.text("set_name", {"name": "batch"})
        tui.kill()
        sent = await one_shot.text("send_message", {"to_id": "coder", "message": "anyone?"})
        assert "queued" in sent, sent
        sent = await call(thread_a, "send_message", THREAD_A, {"to_id": "batch", "message": "exec mail"})
        assert "queued" in sent and "\u2502 anyone?" in sent, sent  # held for the next tool result
        assert queue_calls(app) == [] and queue_calls(exec_agent) == []
