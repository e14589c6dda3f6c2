"""Tool approvals end to end with real processes: a broker, a real bridge under a stand-in
Claude Code (a process named ``claude`` started with the channels flag), the CLI.

The test holds the bridge's stdio (``raw_mcp.StdioBridge``) and plays Claude Code: it sends
``notifications/claude/channel/permission_request`` as 2.1.332 does and reads the
``notifications/claude/channel/permission`` answer; it writes the session transcript lines
Claude Code writes (the assistant's ``tool_use``, later its ``tool_result``). Marked slow
(``.ci/run`` runs it): every step is a CLI process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bridge_support import FakeAgent
from cli_support import cli, cli_json
from conftest import BrokerProcess
from hook_support import run_hook_blocking
from raw_mcp import StdioBridge

from claudepeers.broker import operator

pytestmark = pytest.mark.slow  # a broker, stand-in agents, real bridges and a dozen CLI runs: ~30 s
OURSELVES_REFUSED = operator.refusal("unix", os.getpid())
UNDER_AN_AGENT = pytest.mark.skipif(
    OURSELVES_REFUSED is not None,
    reason=f"the test runner itself may not answer approvals ({OURSELVES_REFUSED}); run pytest from a terminal")
PERMISSION_REQUEST = "notifications/claude/channel/permission_request"
PERMISSION_ANSWER = "notifications/claude/channel/permission"


@pytest.fixture
def session(broker_process: BrokerProcess) -> Iterator[Callable[..., tuple[FakeAgent, StdioBridge]]]:
    """Start stand-in Claude Code sessions with a bridge each; all are ended afterwards (by pid)."""
    started: list[tuple[FakeAgent, StdioBridge]] = []

    def start(name: str = "alpha", channels: bool = True) -> tuple[FakeAgent, StdioBridge]:
        agent = FakeAgent(broker_process.base, name, "claude", broker_process.base, dict(broker_process.env),
                          channels).start()
        bridge = StdioBridge(agent.socket_path, broker_process.base / f"{name}.pid", dict(agent.env), agent.cwd)
        started.append((agent, bridge))
        return agent, bridge

    yield start
    for agent, bridge in started:
        bridge.close()
        agent.cleanup()


def request(request_id: str, command: str) -> dict[str, str]:
    """A permission request as Claude Code 2.1.332 relays a Bash call."""
    return {"request_id": request_id, "tool_name": "Bash", "description": "Create the marker file",
            "input_preview": json.dumps({"command": command, "description": "Create the marker file"}, indent=1)}


def pending(env: dict[str, str], count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``claude-peers approvals --json`` once it lists ``count`` requests (each call is a broker round trip)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = cli_json(env, "approvals", "--json")
        assert isinstance(listed, list)
        if len(listed) == count or time.monotonic() > deadline:
            return listed


def answers(bridge: StdioBridge, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The permission answers the bridge wrote to its agent so far (waits for at least one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [n["params"] for n in bridge.notifications if n["method"] == PERMISSION_ANSWER]
        if found:
            return found
        time.sleep(0.02)  # another thread collects the bridge's lines
    return []


def transcript_write(agent: FakeAgent, *entries: dict[str, Any]) -> None:
    """Append lines to the stand-in session's transcript, as Claude Code writes them."""
    agent.transcript.parent.mkdir(parents=True, exist_ok=True)
    with open(agent.transcript, "a") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")


def tool_use(call_id: str, command: str) -> dict[str, Any]:
    """The assistant's transcript line that starts a Bash call."""
    return {"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "tool_use", "id": call_id, "name": "Bash", "input": {"command": command}}]}}


def tool_result(call_id: str) -> dict[str, Any]:
    """The transcript line that ends it."""
    return {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call_id, "content": "", "is_error": False}]}}


def test_as_a_channel_the_bridge_declares_the_permission_relay(session: Callable) -> None:
    """Started with the channels flag: claude/channel and claude/channel/permission; without it: neither."""
    _, pushed = session("alpha", channels=True)
    declared = pushed.initialize()["result"]["capabilities"]["experimental"]
    assert declared == {"claude/channel": {}, "claude/channel/permission": {}}
    _, inline = session("beta", channels=False)
    assert "claude/channel/permission" not in json.dumps(inline.initialize()["result"]["capabilities"])


@UNDER_AN_AGENT
def test_a_relayed_prompt_is_listed_and_the_persons_answer_reaches_the_agent(session: Callable,
                                                                             broker_process: BrokerProcess) -> None:
    """permission_request -> `approvals` lists it -> `approve` -> the bridge writes the allow
    notification to Claude Code; the request leaves the list; `log` shows the answer."""
    agent, bridge = session()
    bridge.initialize()
    bridge.text("whoami")  # registered
    bridge.notify(PERMISSION_REQUEST, request("fbenr", "touch /tmp/x"))
    [listed] = pending(broker_process.env, 1)
    assert (listed["request"], listed["peer_name"], listed["tool_name"]) == ("fbenr", "alpha", "Bash")
    assert "touch /tmp/x" in listed["input_preview"] and listed["description"] == "Create the marker file"
    shown = cli(broker_process.env, "approvals")
    assert shown.stdout.startswith("fbenr  Bash  for alpha") and "input:" in shown.stdout, shown.stdout
    done = cli(broker_process.env, "approve", "fbenr")
    assert done.returncode == 0 and done.stdout.startswith("Allowed Bash for alpha"), done.stdout + done.stderr
    assert answers(bridge) == [{"request_id": "fbenr", "behavior": "allow"}]
    assert pending(broker_process.env, 0) == []
    log = cli(broker_process.env, "log")
    assert "allowed Bash for alpha" in log.stdout and "the operator, pid" in log.stdout, log.stdout


@UNDER_AN_AGENT
def test_deny_reaches_the_agent_and_a_second_answer_finds_nothing(session: Callable,
                                                                   broker_process: BrokerProcess) -> None:
    """deny is written as behavior deny; answering again says the request is not pending."""
    _, bridge = session()
    bridge.initialize()
    bridge.text("whoami")
    bridge.notify(PERMISSION_REQUEST, request("sajdx", "rm -rf build"))
    pending(broker_process.env, 1)
    assert cli(broker_process.env, "deny", "sajdx").returncode == 0
    assert answers(bridge) == [{"request_id": "sajdx", "behavior": "deny"}]
    again = cli(broker_process.env, "approve", "sajdx")
    assert again.returncode == 1 and "no pending approval is 'sajdx'" in again.stderr, again.stderr


def test_a_prompt_answered_in_the_terminal_leaves_the_list(session: Callable, broker_process: BrokerProcess) -> None:
    """Claude Code tells the channel nothing when its terminal answers first: the tool call's
    result in the transcript ends the request."""
    agent, bridge = session()
    bridge.initialize()
    bridge.text("whoami")
    transcript_write(agent, tool_use("toolu_1", "touch /tmp/a"), tool_use("toolu_2", "touch /tmp/b"))
    bridge.notify(PERMISSION_REQUEST, request("aaaaa", "touch /tmp/a"))
    assert [a["request"] for a in pending(broker_process.env, 1)] == ["aaaaa"]
    transcript_write(agent, tool_result("toolu_2"))  # another call's end: still pending
    time.sleep(0.3)  # nothing to wait for: the absence of a change is what is checked
    assert len(pending(broker_process.env, 1)) == 1
    transcript_write(agent, tool_result("toolu_1"))
    assert pending(broker_process.env, 0) == []


def test_requests_end_when_the_agent_session_ends(session: Callable, broker_process: BrokerProcess) -> None:
    """The bridge's connection closes with its agent: its requests go with it."""
    agent, bridge = session()
    bridge.initialize()
    bridge.text("whoami")
    bridge.notify(PERMISSION_REQUEST, request("ccccc", "make"))
    pending(broker_process.env, 1)
    bridge.close()
    agent.kill()
    assert pending(broker_process.env, 0) == []


def test_approve_from_inside_an_agents_process_tree_is_refused(session: Callable,
                                                                broker_process: BrokerProcess) -> None:
    """The stand-in Claude Code runs `claude-peers approve` as its shell tool would (a real child
    process): refused with exit status 4, naming the agent; the request stays; the refusal is logged."""
    agent, bridge = session()
    bridge.initialize()
    bridge.text("whoami")
    bridge.notify(PERMISSION_REQUEST, request("fbenr", "touch /tmp/x"))
    pending(broker_process.env, 1)
    run = run_hook_blocking(agent, "approve", command=f"{os.sys.executable} -m claudepeers approve fbenr")
    assert run.status == 4, run.stdout + run.stderr
    assert "permission denied: refusing to allow a tool request" in run.stderr
    assert "claude (pid " in run.stderr and "is an agent (Claude Code)" in run.stderr, run.stderr
    assert len(pending(broker_process.env, 1)) == 1
    assert not [n for n in bridge.notifications if n["method"] == PERMISSION_ANSWER]
    log = cli(broker_process.env, "log")
    assert "refused to allow 'fbenr'" in log.stdout, log.stdout


def test_an_agents_environment_is_refused_too(session: Callable, broker_process: BrokerProcess) -> None:
    """A process that left the agent's tree but kept its environment (CLAUDECODE=1) is refused."""
    _, bridge = session()
    bridge.initialize()
    bridge.text("whoami")
    bridge.notify(PERMISSION_REQUEST, request("fbenr", "touch /tmp/x"))
    pending(broker_process.env, 1)
    done = cli({**broker_process.env, "CLAUDECODE": "1"}, "deny", "fbenr")
    assert done.returncode == 4 and "CLAUDECODE is set" in done.stderr, done.stderr
    assert len(pending(broker_process.env, 1)) == 1


def test_a_process_detached_to_init_is_refused(session: Callable, broker_process: BrokerProcess) -> None:
    """The double fork that leaves an agent's tree (``(cmd &)`` in a shell): re-parented to init, refused."""
    out = broker_process.base / "detached.out"
    subprocess.run(["/bin/sh", "-c", f"({os.sys.executable} -m claudepeers approve fbenr > {out} 2>&1 &)"],
                   env=broker_process.env, check=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "claude-peers:" not in (out.read_text() if out.exists() else ""):
        time.sleep(0.05)  # the detached process writes when it is done
    assert "detached from the process that started it (its parent is init)" in out.read_text()
