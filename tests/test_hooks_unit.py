"""The hook's parts without processes: the output it builds, the stop guard's loop guard, and
its promise never to fail a turn (its AMP codec is tested in ``test_ampbox.py``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from claudepeers.hooks import output
from claudepeers.hooks.run import StopCounter, main
from claudepeers.common.settings import Settings
from conftest import broker_env


def message(number: int, body: str = "hello", sender: str = "beta") -> dict:
    """A message as FetchUnread returns it."""
    return {"id": number, "from_id": "b1", "from_name": sender, "from_summary": "", "from_cwd": "/w",
            "from_client": "codex", "verified": True, "to_id": "a1", "body": body,
            "sent_at": "2026-11-24T22:00:00Z", "acked_at": None}


def test_selection_keeps_order_bounds_size_and_counts_what_waits() -> None:
    """Whole messages in order until the bound; the rest (and the broker's ``more``) is said to wait."""
    messages = [message(1, "a" * 100), message(2, "b" * 5000), message(3, "c")]
    chosen = output.select(messages, more=4, max_chars=1000)
    assert chosen.ids == [1] and chosen.waiting == 6
    assert "\u2502 " + "a" * 100 in chosen.text and "6 more claude-peers messages waiting" in chosen.text
    everything = output.select(messages, more=0)
    assert everything.ids == [1, 2, 3] and everything.waiting == 0 and "3 new messages" in everything.text
    assert output.select([], more=0) == output.Selection("", [], 0)


def test_a_message_too_long_for_any_output_is_pointed_to_not_shown() -> None:
    """When even the first message does not fit, nothing is acknowledged and check_messages is named."""
    chosen = output.select([message(1, "z" * 20_000)], more=0)
    assert chosen.ids == [] and chosen.waiting == 1 and "check_messages" in chosen.text


def test_outputs_have_the_agents_shapes() -> None:
    """Context events use hookSpecificOutput; Stop blocks with a reason naming the mail."""
    assert output.context_output("SessionStart", "t") == {
        "hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": "t"}}
    stop = output.stop_output("the mail")
    assert stop["decision"] == "block" and stop["reason"].endswith("the mail")


def test_the_stop_guard_never_blocks_while_stop_hook_active_and_at_most_three_times_a_turn() -> None:
    """stop_hook_active always lets the turn end; without it, blocks are bounded per turn."""
    assert not output.stop_may_block({"stop_hook_active": True}, 0)
    assert output.stop_may_block({"stop_hook_active": False}, 2)
    assert not output.stop_may_block({}, output.MAX_STOP_BLOCKS)


def test_stop_counter_counts_per_session_and_turn(short_dir: Path) -> None:
    """Blocks add up within a turn; a new turn id or a reset starts from 0; sessions are apart."""
    settings = Settings.from_env(broker_env(short_dir))
    first = StopCounter(settings, {"session_id": "s/1", "turn_id": "t1"}, 99)
    first.record_block()
    first.record_block()
    assert first.blocks() == 2
    assert StopCounter(settings, {"session_id": "s/1", "turn_id": "t2"}, 99).blocks() == 0
    assert StopCounter(settings, {"session_id": "other"}, 99).blocks() == 0
    first.reset()
    assert first.blocks() == 0


def test_unsupported_event_and_garbage_input_exit_0_with_a_log_line(short_dir: Path, monkeypatch) -> None:
    """An event the hook does not serve, or stdin that is not JSON: no output, exit 0, one log line."""
    for name, value in broker_env(short_dir).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert main(["PreToolUse"], io.StringIO("not json"), out) == 0
    assert out.getvalue() == ""
    log = (short_dir / "run" / "hooks.log").read_text()
    assert "hook PreToolUse" in log and "unsupported event" in log


def test_the_hook_imports_neither_twisted_nor_mcp() -> None:
    """The hook's modules stay light: no Twisted, no mcp (it runs on every prompt)."""
    code = ("import sys, claudepeers.hooks.run; "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('twisted', 'mcp', 'anyio')]; "
            "print(json.dumps(heavy))")
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
