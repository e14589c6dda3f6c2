"""The real interactive Codex TUI (in tmux, against a stand-in model API): slow.

``CLAUDE_PEERS_TEST_CODEX`` (0.169.0) and ``CLAUDE_PEERS_TEST_CODEX_NEW`` (the newest, 0.171.0)
name the binaries (``npm install @openai/codex@0.169.0``, ``@openai/codex@0.171.0``). Each
test runs with both: two TUIs sharing one background app-server are two peers; an idle one
is woken by ``claude-peers send`` through ``codex queue``, and the model request after the
woken turn's ``check_messages`` carries the message; a TUI the person quit is never woken
and its peer ends at once; once the person quits and the daemon stops, no bridge is left
(checked by pid).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent_tmux import CODEX, CODEX_NEW
from cli_support import cli, cli_json
from codex_tui import CodexTuis
from conftest import BrokerProcess, home_env

pytestmark = pytest.mark.slow

VERSIONS = {"0.169": CODEX, "0.171": CODEX_NEW}


@pytest.fixture(params=sorted(VERSIONS))
def tuis(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[CodexTuis]:
    """A broker at the default paths of a temporary HOME, and Codex TUIs of that HOME."""
    codex = VERSIONS[request.param]
    if not codex:
        pytest.skip(f"no Codex {request.param} (npm install @openai/codex@{request.param}.x, then set "
                    f"CLAUDE_PEERS_TEST_CODEX{'_NEW' if request.param == '0.171' else ''} to its bin/codex)")
    broker = BrokerProcess(short_dir, home_env(short_dir, PATH="/usr/bin:/bin")).start()
    world = CodexTuis(codex, broker.env, short_dir)
    try:
        world.configure()
        yield world
    finally:
        world.close()
        broker.stop()


def peers_by_name(tuis: CodexTuis) -> dict[str, dict]:
    """Live peers as the operator lists them."""
    return {peer["name"]: peer for peer in cli_json(tuis.env, "peers", "--json")}  # type: ignore[union-attr]


def test_an_idle_interactive_codex_is_woken_and_two_tuis_are_two_peers(tuis: CodexTuis) -> None:
    """Two TUIs, one app-server: two peers with their thread ids. A send to the idle one is
    answered woke and its next model requests carry the message; the other is not woken."""
    tuis.open("a")
    tuis.open("b")
    tuis.bind("a", "tui-a")
    tuis.bind("b", "tui-b")
    peers = peers_by_name(tuis)
    assert peers["tui-a"]["id"] != peers["tui-b"]["id"]
    assert peers["tui-a"]["thread_id"] and peers["tui-a"]["thread_id"] != peers["tui-b"]["thread_id"]
    assert len(tuis.app_servers()) >= 1 and len(tuis.bridges()) == 2
    sent = cli(tuis.env, "send", "tui-a", "WAKE-ME-1, please look")
    assert sent.returncode == 0 and sent.stdout.startswith("Woke tui-a"), sent.stdout + sent.stderr
    request, _ = tuis.api.wait_for_text("WAKE-ME-1", 30)
    assert request.get("prompt_cache_key") == peers["tui-a"]["thread_id"]
    tuis.tmux.wait_for_screen("check_messages", 10, "a")
    again = cli(tuis.env, "send", "tui-a", "WAKE-ME-2")
    assert again.stdout.startswith("Woke tui-a"), again.stdout
    tuis.api.wait_for_text("WAKE-ME-2", 30)
    states = cli_json(tuis.env, "inbox", "--json", "tui-a")
    assert all(message.get("acked_at") for message in states), states  # type: ignore[union-attr]
    assert "WAKE-ME" not in tuis.screen("b")


def test_no_bridge_is_left_after_the_tuis_exit_and_the_daemon_stops(tuis: CodexTuis) -> None:
    """The person quits both TUIs; the daemon stops: every bridge seen has ended (by pid)."""
    tuis.open("a")
    tuis.open("b")
    tuis.bind("a", "tui-a")
    tuis.bind("b", "tui-b")
    assert len(tuis.seen_bridges) == 2
    tuis.exit_all()
    assert tuis.left_over(timeout=5.0) == []


def test_a_thread_whose_tui_exited_is_not_woken_and_its_peer_ends(tuis: CodexTuis) -> None:
    """Two TUIs on one CODEX_HOME (one app-server); the person quits one. Its thread stays
    loaded in the daemon for a minute, but its bridge follows the TUI: the peer is gone
    within seconds and a send to it is refused as ended, never 'woke' (no turn runs in the
    thread); the other TUI still is woken."""
    tuis.open("a")
    tuis.open("b")
    tuis.bind("a", "tui-a")
    tuis.bind("b", "tui-b")
    peer_a = peers_by_name(tuis)["tui-a"]["id"]
    bridge_a = set(tuis.seen_bridges)
    tuis.quit("a")
    deadline = time.monotonic() + 10
    while "tui-a" in peers_by_name(tuis):
        assert time.monotonic() < deadline, "the peer of the quit TUI is still listed"
        time.sleep(0.2)  # the broker marks it gone once its bridge exits
    sent = cli(tuis.env, "send", peer_a, "NOBODY-LOOKS")
    # Ended: refused with the reason (a send in the instant before its bridge left is queued).
    assert (sent.returncode == 1 and "ended" in sent.stderr) or sent.stdout.startswith("Queued"), \
        sent.stdout + sent.stderr
    assert "NOBODY-LOOKS" not in json.dumps(tuis.api.requests)
    alive = {bridge.pid for bridge in tuis.bridges()}
    assert len(alive & bridge_a) == 1  # b's bridge runs on; a's has ended
    woke = cli(tuis.env, "send", "tui-b", "STILL-HERE")
    assert woke.stdout.startswith("Woke tui-b"), woke.stdout + woke.stderr

