"""Tool approvals with the real Claude Code, interactive in tmux, offline (slow).

``CLAUDE_PEERS_TEST_CLAUDE`` (2.1.197 here) and ``CLAUDE_PEERS_TEST_CLAUDE_NEW`` (2.1.332) name
the binaries; both relay permission prompts to a channel that declares
``claude/channel/permission`` (with the ``tengu_harbor_permissions`` feature cached, as
``claude_tmux.seed_home`` does). Each session is started with the dev channels flag and
``--permission-mode default`` (2.1.332 would otherwise start in auto mode, where a classifier
decides); its stand-in model asks for ``Bash touch <dir>/<word>`` whenever the person types
``MAKE <word>``, which needs the person's approval.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from agent_standins import streamed_tool_use
from agent_tmux import CLAUDE, CLAUDE_NEW, HOW_TO_GET_CLAUDE as HOW_TO_GET
from claude_tmux import DEV_FLAG, Scenario
from cli_support import cli, cli_json

from claudepeers.broker import operator

pytestmark = pytest.mark.slow
ARGS = [*DEV_FLAG, "--permission-mode", "default"]
BINARIES = [pytest.param(CLAUDE, id="pinned", marks=pytest.mark.skipif(not CLAUDE, reason=HOW_TO_GET)),
            pytest.param(CLAUDE_NEW, id="newest", marks=pytest.mark.skipif(not CLAUDE_NEW, reason=HOW_TO_GET))]
OURSELVES_REFUSED = operator.refusal("unix", os.getpid())


def make_files_in(folder: Path) -> Any:
    """A Messages API responder: ``MAKE <word>`` typed and not yet answered -> ``touch folder/word``."""

    def respond(number: int, request: dict) -> bytes | None:
        if not request.get("tools"):
            return None  # the title and other side requests
        messages = json.dumps(request.get("messages", []))
        words = list(dict.fromkeys(re.findall(r"MAKE (\w+)", messages)))
        if len(words) > messages.count('"tool_result"'):
            return streamed_tool_use(number, "Bash", {"command": f"touch {folder / words[-1]}",
                                                      "description": f"Create {words[-1]}"})
        return None

    return respond


def waiting_for(env: dict[str, str], word: str, screen: Any, timeout: float = 40.0) -> dict[str, Any]:
    """The pending approval whose input names ``word`` (each look is a CLI run, which paces the loop)."""
    deadline = time.monotonic() + timeout
    listed: Any = []
    while time.monotonic() < deadline:
        listed = cli_json(env, "approvals", "--json")
        for approval in listed:
            if word in approval["input_preview"]:
                return approval
    raise AssertionError(f"no approval for {word} within {timeout} s: {listed}\n{screen()}")


def until(condition: Any, timeout: float) -> bool:
    """Wait (bounded) for something another program does; True once it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)  # another program's doing: nothing to subscribe to
    return condition()


def settled(one: Scenario, quiet: float = 1.5, timeout: float = 30.0) -> None:
    """Wait until the turn is over: no model request for ``quiet`` seconds and no busy line on
    screen (a prompt typed into a running turn joins that turn instead of starting one)."""
    assert one.session is not None
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(one.api.requests)  # type: ignore[attr-defined]
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet and "esc to interrupt" not in one.session.screen():
            return
        time.sleep(0.1)  # another program's doing: nothing to subscribe to
    raise AssertionError(f"the turn did not end within {timeout} s:\n{one.session.screen()}")


@pytest.mark.skipif(OURSELVES_REFUSED is not None, reason=f"the test runner may not answer approvals: {OURSELVES_REFUSED}")
@pytest.mark.parametrize("binary", BINARIES)
def test_real_claude_code_asks_the_person_through_claude_peers(binary: str, short_dir: Path,
                                                               scenario: list[Scenario]) -> None:
    """The Bash prompt shows in `claude-peers approvals`; `approve` runs the tool (the file
    appears), `deny` stops it (the model reads "Denied via channel"), and a prompt answered in
    the terminal leaves the list by itself; `log` has both answers."""
    made = short_dir / "made"
    made.mkdir()
    one = Scenario(short_dir, binary, ARGS, respond_messages=make_files_in(made)).start()
    scenario.append(one)
    assert "Channel notifications registered" in one.channel_decided()
    session = one.session
    assert session is not None

    session.type_prompt("please MAKE allowed1")
    asked = waiting_for(one.env, "allowed1", session.screen)
    assert asked["tool_name"] == "Bash" and asked["peer_id"] == one.peer["id"], asked
    assert re.fullmatch(r"[a-z]{5}", asked["request_id"]), asked
    done = cli(one.env, "approve", asked["request"])
    assert done.returncode == 0 and done.stdout.startswith("Allowed Bash for "), done.stdout + done.stderr
    assert until(lambda: (made / "allowed1").exists(), 20), session.screen()
    assert cli_json(one.env, "approvals", "--json") == []
    settled(one)

    session.type_prompt("please MAKE denied2")
    asked = waiting_for(one.env, "denied2", session.screen)
    done = cli(one.env, "deny", asked["request"])
    assert done.returncode == 0 and done.stdout.startswith("Denied Bash for "), done.stdout + done.stderr
    one.api.wait_for_text("Denied via channel claude-peers", 20)  # type: ignore[attr-defined]
    assert not (made / "denied2").exists()
    assert cli_json(one.env, "approvals", "--json") == []
    settled(one)

    session.type_prompt("please MAKE terminal3")
    waiting_for(one.env, "terminal3", session.screen)
    # The request reaches the broker before the dialog takes keys (the newest version draws it
    # in steps): press Enter (the first choice, Yes) once the question shows, again if it stays.
    assert until(lambda: "Do you want to proceed?" in session.screen(), 20), session.screen()
    for _ in range(3):
        session.keys("Enter")
        if until(lambda: (made / "terminal3").exists(), 6):
            break
    assert until(lambda: (made / "terminal3").exists(), 10), session.screen()
    assert until(lambda: cli_json(one.env, "approvals", "--json") == [], 20), one.bridge_log()[-3000:]

    log = cli(one.env, "log").stdout
    assert "allowed Bash for" in log and "denied Bash for" in log and "ended: its tool call ended" in log, log
