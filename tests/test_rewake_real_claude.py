"""The rewake hook with the real Claude Code (slow): an idle interactive session without channels is woken.

Both the pinned and the newest Claude Code, each interactive in tmux against a stand-in
model API (no account, no network), without the channels flag, after
``claude-peers install --claude --config-file --hooks``. Binaries: ``CLAUDE_PEERS_TEST_CLAUDE``
(e.g. ``node_modules/.bin/claude`` of ``npm install @anthropic-ai/claude-code@2.1.197``) and
``CLAUDE_PEERS_TEST_CLAUDE_NEW`` (of ``npm install @anthropic-ai/claude-code@latest``).
"""

from __future__ import annotations

import json

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
