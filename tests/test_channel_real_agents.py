"""Channel push with the real Claude Code, interactive in tmux, offline (slow).

``CLAUDE_PEERS_TEST_CLAUDE`` (2.1.197 here) and ``CLAUDE_PEERS_TEST_CLAUDE_NEW`` (2.1.332)
name the binaries. Each session talks to a stand-in Messages API and runs ``claude-peers
mcp`` of this checkout with the prompt hooks installed. A push counts as shown only when
Claude Code's transcript confirms it; in every setup where Claude Code skips the channel
the message must still reach the model later (here: with the next prompt the person
types), exactly once.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


import pytest

from agent_standins import VERTEX_MODELS
from agent_tmux import CLAUDE, CLAUDE_NEW, HOW_TO_GET_CLAUDE as HOW_TO_GET
from claude_tmux import DEV_FLAG, Scenario, own_etc_works
from cli_support import cli, cli_json

pytestmark = pytest.mark.slow
BINARIES = [pytest.param(CLAUDE, id="pinned", marks=pytest.mark.skipif(not CLAUDE, reason=HOW_TO_GET)),
            pytest.param(CLAUDE_NEW, id="newest", marks=pytest.mark.skipif(not CLAUDE_NEW, reason=HOW_TO_GET))]


def carried(api: object, text: str) -> int:
    """How many times ``text`` appears in the newest model request (each request repeats the
    conversation, so more than once would mean the agent was shown it twice)."""
    requests = api.requests  # type: ignore[attr-defined]
    return json.dumps(requests[-1]).count(text) if requests else 0


@pytest.mark.parametrize("binary", BINARIES)
def test_channel_push_is_confirmed_and_reaches_the_model(binary: str, short_dir: Path,
                                                          scenario: list[Scenario]) -> None:
    """Started with the dev channels flag: the send answers shown, and the model request carries
    the message within a second; doctor names the channel and the MCP era."""
    one = Scenario(short_dir, binary, DEV_FLAG).start()
    scenario.append(one)
    assert "Channel notifications registered" in one.channel_decided()
    started = time.monotonic()
    sent = cli(one.env, "send", one.peer["id"], "REAL-CHANNEL-1 please look")
    assert sent.returncode == 0 and sent.stdout.startswith("Shown to "), sent.stdout + sent.stderr
    _, arrived = one.api.wait_for_text("REAL-CHANNEL-1", 10)  # type: ignore[attr-defined]
    assert arrived - started < 3.0
    doctor = cli(one.env, "doctor")
    assert "mail path" in doctor.stdout and "channel (confirmed); MCP 2025-11-25" in doctor.stdout, doctor.stdout
    time.sleep(1.0)  # let a second model request come, if the agent were shown it twice
    assert carried(one.api, "REAL-CHANNEL-1 please look") == 1


FALLBACKS = {
    "gate off": dict(gate=False, args=DEV_FLAG),
    "--channels server:": dict(args=["--channels", "server:claude-peers"]),
    "telemetry disabled": dict(args=DEV_FLAG, extra_env={"DISABLE_TELEMETRY": "1"}),
    # Google Vertex, its auth skipped: the stand-in answers Vertex's model paths.
    "third-party provider (Vertex)": dict(args=DEV_FLAG, extra_env={
        "CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1",
        "ANTHROPIC_VERTEX_PROJECT_ID": "test", "CLOUD_ML_REGION": "us-east5"}),
    "organisation policy": dict(args=DEV_FLAG, managed_settings={"channelsEnabled": False}),
}
#: What Claude Code's skip line must say, where the case's own reason is worth pinning.
SKIP_REASONS = {"third-party provider (Vertex)": "channels are not available on third-party providers",
                "organisation policy": "channels not enabled by org policy"}


@pytest.mark.parametrize("binary", BINARIES)
@pytest.mark.parametrize("case", list(FALLBACKS))
def test_a_skipped_channel_falls_back_and_the_rewake_hook_shows_it_once(
        binary: str, case: str, short_dir: Path, scenario: list[Scenario]) -> None:
    """Claude Code skips the channel: the push is not confirmed, the peer is listed as falling
    back, the rewake hook wakes the idle session with the message (the sender hears woke), and
    the model gets it exactly once, with no prompt typed."""
    if "managed_settings" in FALLBACKS[case] and not own_etc_works():
        pytest.skip("needs unprivileged user namespaces with overlayfs (Linux 5.11+) to give claude its own /etc")
    one = Scenario(short_dir, binary, **FALLBACKS[case]).start()  # type: ignore[arg-type]
    scenario.append(one)
    if case != "gate off":  # with the gate off Claude Code logs no decision at all
        decided = one.channel_decided()
        assert "skipped" in decided and SKIP_REASONS.get(case, "") in decided, decided
    sent = cli(one.env, "send", one.peer["id"], "REAL-FALLBACK-1 please look")
    assert sent.returncode == 0 and sent.stdout.startswith("Woke "), sent.stdout + sent.stderr
    peers = cli_json(one.env, "peers", "--json", "--online")
    assert "falling back" in peers[0]["delivery"], peers
    one.api.wait_for_text("REAL-FALLBACK-1", 20)  # type: ignore[attr-defined]
    time.sleep(1.0)  # let a second model request come, if the agent were shown it twice
    assert carried(one.api, "REAL-FALLBACK-1 please look") == 1
    if case.endswith("(Vertex)"):  # the provider really took: every model request went Vertex's way
        assert one.api.paths and all(VERTEX_MODELS in path for path in one.api.paths), one.api.paths  # type: ignore[attr-defined]
    inbox = cli(one.env, "inbox", "--json", one.peer["id"])
    assert json.loads(inbox.stdout)[0]["acked_at"], inbox.stdout  # acknowledged: nothing lost, nothing left


@pytest.mark.skipif(not CLAUDE_NEW, reason=HOW_TO_GET)
def test_print_mode_skips_the_channel_and_the_stop_guard_shows_the_mail(short_dir: Path) -> None:
    """``claude -p`` ignores channels: the message sent during the turn comes back once, by the hook."""
    from agent_standins import StandInApi
    from claude_tmux import API_KEY, seed_home
    from conftest import BrokerProcess, broker_env

    env = broker_env(short_dir)
    broker = BrokerProcess(short_dir, env).start()
    seed_home(short_dir, short_dir)
    assert cli(env, "install", "--claude", "--hooks", "--stop-guard").returncode == 0

    def first(api: StandInApi, request: dict) -> None:
        if not api.requests:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not cli_json(env, "peers", "--json", "--online"):
                pass
            peer = cli_json(env, "peers", "--json", "--online")[0]
            sends.append(cli(env, "send", peer["id"], "REAL-PRINT-1 please look"))

    sends: list[subprocess.CompletedProcess] = []
    api = StandInApi(first)
    try:
        done = subprocess.run([str(CLAUDE_NEW), "-p", "hello", *DEV_FLAG],
                              env={**env, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": api.url},
                              cwd=short_dir, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        api.close()
        broker.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert sends and sends[0].stdout.startswith("Queued for "), sends and sends[0].stdout
    assert "channel push not confirmed" in sends[0].stdout
    assert carried(api, "REAL-PRINT-1 please look") >= 1
    # Shown by one path only: one hook run showed it. (The final request of a -p run carries
    # the Stop hook's text twice; not analysed further, so the request is not what counts here.)
    shown = [line for line in (short_dir / "run" / "hooks.log").read_text().splitlines() if "showed messages" in line]
    assert len(shown) == 1 and "hook Stop" in shown[0], shown
