"""The rewake hook with the real Claude Code (slow): an idle interactive session without channels is woken.

Both the pinned and the newest Claude Code, each interactive in tmux against a stand-in
model API (no account, no network), without the channels flag, after
``claude-peers install --claude --config-file --hooks``. Binaries: ``CLAUDE_PEERS_TEST_CLAUDE``
(e.g. ``node_modules/.bin/claude`` of ``npm install @anthropic-ai/claude-code@2.1.197``) and
``CLAUDE_PEERS_TEST_CLAUDE_NEW`` (of ``npm install @anthropic-ai/claude-code@latest``).
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from agent_standins import StandInApi
from agent_tmux import CLAUDE, CLAUDE_NEW, HAVE_TMUX, HOW_TO_GET_CLAUDE, started, wait_gone
from claude_tmux import ClaudeSession, seed_home
from cli_support import BrokerView, cli
from conftest import BrokerProcess

pytestmark = pytest.mark.slow

CLAUDES = {"pinned": CLAUDE, "newest": CLAUDE_NEW}


def ours_below(session: ClaudeSession) -> dict[int, float]:
    """The claude-peers processes (bridge, hooks, waiters) below the session now: pid -> start time."""
    found = {}
    for pid, start in session.descendants().items():
        try:
            command = " ".join(psutil.Process(pid).cmdline())
        except psutil.NoSuchProcess:
            continue
        if "claude-peers" in command or "claudepeers" in command:
            found[pid] = start
    return found


@pytest.mark.skipif(not HAVE_TMUX, reason="no tmux (apt-get install tmux)")
@pytest.mark.parametrize("version", sorted(CLAUDES))
def test_an_idle_claude_code_without_channels_is_woken_by_a_send(version: str, home_broker: BrokerProcess) -> None:
    """Idle session, a CLI send: the sender hears woke, the next model request carries the message once,
    the Stop hook arms the next waiter, and after /exit no claude-peers process of the session runs."""
    claude = CLAUDES[version]
    if not claude:
        pytest.skip(HOW_TO_GET_CLAUDE)
    broker = home_broker
    env = {**broker.env, "CLAUDE_PEER_NAME": "idle"}
    installed = cli(env, "install", "--claude", "--config-file", "--hooks")
    assert installed.returncode == 0, installed.stderr
    seed_home(broker.base, broker.base, gate=False)
    api = StandInApi()
    session = ClaudeSession(claude, broker.base, env).start(api.url)
    view = BrokerView(broker.socket_path)
    recorded: dict[int, float] = {}
    try:
        first = view.wait_for_waiter("idle")
        recorded.update(started(first))
        answer = view.send("idle", "REWAKE-E2E, please look")
        assert answer["status"] == "woke", answer
        request, _ = api.wait_for_text("REWAKE-E2E", 60)
        assert "\u2502 REWAKE-E2E, please look" in json.dumps(request, ensure_ascii=False)
        second = view.wait_for_waiter("idle", other_than=first)  # the turn's Stop hook re-armed it
        recorded.update(started(second))
        recorded.update(ours_below(session))
        assert len(recorded) >= 3  # both waiters and the bridge at least
        # Every later request repeats the conversation: the message is in it once.
        assert json.dumps(api.requests[-1], ensure_ascii=False).count("REWAKE-E2E, please look") == 1
        log = (broker.socket_path.parent / "hooks.log").read_text()
        assert log.count("woke peer") == 1 and "showed messages" not in log, log
        session.exit()
        assert wait_gone(recorded, 15) == [], (recorded, session.screen())
    finally:
        session.stop()
        api.close()
        for pid in wait_gone(recorded, 0):  # a failed test leaves nothing behind either
            psutil.Process(pid).kill()


@pytest.mark.skipif(not HAVE_TMUX, reason="no tmux (apt-get install tmux)")
@pytest.mark.parametrize("version", sorted(CLAUDES))
def test_mail_that_wakes_the_prompt_waiter_mid_turn_reaches_the_model_after_the_turn(
        version: str, home_broker: BrokerProcess) -> None:
    """The person's prompt arms a UserPromptSubmit waiter; mail comes while the model is still
    answering (the stand-in holds its answer 3 s), so the waiter exits 2 mid-turn and the sender
    hears woke. Claude Code keeps the text: once the turn ends it starts another with the message
    as a new user block, and the person sees the rewake line."""
    claude = CLAUDES[version]
    if not claude:
        pytest.skip(HOW_TO_GET_CLAUDE)
    broker = home_broker
    env = {**broker.env, "CLAUDE_PEER_NAME": "busy"}
    installed = cli(env, "install", "--claude", "--config-file", "--hooks")
    assert installed.returncode == 0, installed.stderr
    seed_home(broker.base, broker.base, gate=False)
    view = BrokerView(broker.socket_path)
    answers: list[dict[str, str]] = []
    state: dict[str, int] = {}

    def mid_turn(api: StandInApi, request: dict) -> None:
        """On the turn's model request: send while the turn runs, then answer late."""
        if answers or "SLOW-TURN" not in json.dumps(request) or not request.get("tools"):
            return
        state["prompt_waiter"] = view.wait_for_waiter("busy", other_than=state["first"], timeout=30)
        answers.append(view.send("busy", "MIDTURN-MAIL, please look"))
        time.sleep(3.0)  # the model is still "thinking" when the waiter exits 2

    api = StandInApi(on_request=mid_turn)
    session = ClaudeSession(claude, broker.base, env).start(api.url)
    recorded: dict[int, float] = {}
    try:
        state["first"] = view.wait_for_waiter("busy")
        recorded.update(started(state["first"]))
        session.keys("-l", "SLOW-TURN: think about it")
        time.sleep(0.3)  # the prompt box takes pasted text in a burst; Enter must come after it
        session.keys("Enter")
        request, _ = api.wait_for_text("MIDTURN-MAIL", 60)
        assert answers and answers[0]["status"] == "woke", answers
        turn = next(i for i, r in enumerate(api.requests) if "SLOW-TURN" in json.dumps(r) and r.get("tools"))
        assert api.requests.index(request) > turn  # a later request: after the slow turn's answer
        assert "\u2502 MIDTURN-MAIL, please look" in json.dumps(request, ensure_ascii=False)
        assert json.dumps(api.requests[-1], ensure_ascii=False).count("MIDTURN-MAIL, please look") == 1
        deadline = time.monotonic() + 10
        while "claude-peers: new peer mail" not in session.screen():
            assert time.monotonic() < deadline, session.screen()
            time.sleep(0.2)  # the terminal gives no other signal
        recorded.update(ours_below(session))
        session.exit()
        assert wait_gone(recorded, 15) == [], (recorded, session.screen())
    finally:
        session.stop()
        api.close()
        for pid in wait_gone(recorded, 0):
            psutil.Process(pid).kill()
