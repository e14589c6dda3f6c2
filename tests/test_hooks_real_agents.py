"""End to end with the real agent CLIs (slow; each skipped unless its binary is found).

``CLAUDE_PEERS_TEST_CLAUDE`` and ``CLAUDE_PEERS_TEST_CODEX`` name the binaries (e.g.
``node_modules/.bin/claude`` and ``node_modules/.bin/codex`` from ``npm install
@anthropic-ai/claude-code @openai/codex``), else ``claude``/``codex`` on PATH are used. Each
agent talks to a stand-in model API on localhost, so no account or network is needed. On
the first model request the stand-in sends the agent's peer a message; the stop guard must
then show it, and the agent's next model request must carry it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from agent_standins import StandInApi
from agent_tmux import CLAUDE, CLAUDE_NEW, CODEX, HOW_TO_GET_CLAUDE
from cli_support import cli, cli_json
from codex_tui import standin_provider
from conftest import BrokerProcess

#: The pinned Claude Code and the newest one, each skipped with how to get it when absent.
CLAUDES = {"pinned": CLAUDE, "newest": CLAUDE_NEW}

pytestmark = pytest.mark.slow


def send_when_registered(env: dict[str, str], body: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Send ``body`` to the agent's peer once its bridge has registered (the agent starts it
    alongside its first model request). Asks the broker again and again until a deadline;
    each question is a CLI run of a few hundred milliseconds, which paces the loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        peers = cli_json(env, "peers", "--json", "--online")
        if peers:
            return cli(env, "send", peers[0]["id"], body)
    raise TimeoutError(f"no peer registered within {timeout} s")


def texts_with(requests: list[dict], needle: str) -> list[tuple[str, str]]:
    """(role, text) of every message part of the last request that holds ``needle``, whatever its
    form: content as a string or as a list of text parts, in user or (2.1.332) system messages.
    The last request repeats the whole conversation, so each time the model saw it counts once."""
    found = []
    for message in requests[-1].get("messages", []) if requests else []:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        found += [(message.get("role", "?"), part["text"]) for part in parts
                  if part.get("type") == "text" and needle in part.get("text", "")]
    return found


def stop_feedback(text: str) -> bool:
    """Claude Code's framing of a Stop hook's block: "Stop hook feedback:" at the start (2.1.197)
    or right after the preamble of the system reminder that 2.1.332 wraps hook output in."""
    reminder = "<system-reminder>\n"
    if text.startswith(reminder):
        text = text.split("\n", 2)[2] if text.count("\n") >= 2 else ""
    return text.startswith("Stop hook feedback:")


# 2.1.332 gives a JSON {"decision": "block"} reason to the model twice (the feedback reminder and a
# system message "Stop hook blocking error from command ..."): the hook blocks by exit status 2.
@pytest.mark.parametrize("which", ["pinned", "newest"])
def test_claude_code_stop_guard_shows_mail_that_arrived_during_the_turn(home_broker: BrokerProcess, which: str) -> None:
    """Real Claude Code: its bridge registers; mail sent during the turn reaches the model once,
    as Stop hook feedback."""
    claude = CLAUDES[which]
    if not claude or not Path(claude).exists():
        pytest.skip(f"no {which} claude binary ({HOW_TO_GET_CLAUDE})")
    broker = home_broker
    env = broker.env
    installed = cli(env, "install", "--claude", "--config-file", "--hooks", "--stop-guard")
    assert installed.returncode == 0, installed.stderr
    sent: list[subprocess.CompletedProcess] = []
    api = StandInApi(lambda api, request: api.requests or sent.append(send_when_registered(env, "E2E-PEER-MAIL, please look")))
    try:
        done = subprocess.run(
            [claude, "-p", "hello"],
            env={**env, "CLAUDE_PEER_NAME": "e2e", "ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": api.url},
            cwd=broker.base, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    finally:
        api.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert sent and sent[0].returncode == 0, sent and sent[0].stderr
    # The last request repeats the conversation: the message is in it once, as the Stop hook's feedback.
    seen = texts_with(api.requests, "E2E-PEER-MAIL")
    assert len(seen) == 1 and seen[0][0] == "user" and stop_feedback(seen[0][1]), seen
    assert "\u2502 E2E-PEER-MAIL, please look" in seen[0][1]
    shown = [line for line in (broker.socket_path.parent / "hooks.log").read_text().splitlines() if "showed messages" in line]
    assert len(shown) == 1 and "hook Stop" in shown[0]


@pytest.mark.skipif(not CODEX, reason="no codex binary (set CLAUDE_PEERS_TEST_CODEX)")
def test_codex_stop_guard_shows_mail_that_arrived_during_the_turn(home_broker: BrokerProcess) -> None:
    """Real Codex: its bridge registers; mail sent during the turn is the continuation prompt of the Stop hook.

    Codex runs untrusted hooks only with ``--dangerously-bypass-hook-trust`` (a user trusts
    them once in ``/hooks``).
    """
    broker = home_broker
    env = {**broker.env, "CODEX_HOME": str(broker.base / ".codex")}
    installed = cli(env, "install", "--codex", "--hooks", "--stop-guard")
    assert installed.returncode == 0, installed.stderr
    sent: list[subprocess.CompletedProcess] = []
    api = StandInApi(lambda api, request: api.requests or sent.append(send_when_registered(env, "E2E-CODEX-MAIL, please look")))
    config = broker.base / ".codex" / "config.toml"
    config.write_text(standin_provider(config.read_text(), api.url))
    try:
        done = subprocess.run(
            [str(CODEX), "exec", "--dangerously-bypass-hook-trust", "--skip-git-repo-check", "hello"],
            env=env, cwd=broker.base, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    finally:
        api.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert sent and sent[0].returncode == 0, sent and sent[0].stderr
    assert "Stop Blocked" in done.stdout + done.stderr
    carried = [json.dumps(item) for request in api.requests[1:] for item in request.get("input", [])
               if "E2E-CODEX-MAIL" in json.dumps(item)]
    assert carried and "\\u2502 E2E-CODEX-MAIL, please look" in carried[0]
    shown = [line for line in (broker.socket_path.parent / "hooks.log").read_text().splitlines() if "showed messages" in line]
    assert len(shown) == 1 and "hook Stop" in shown[0]
