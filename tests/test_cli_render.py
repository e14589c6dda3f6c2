"""The CLI's pure parts: rendering, event de-duplication, error mapping, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from claudepeers.wire import commands as wire
from claudepeers.cli import main as cli_main
from claudepeers.cli import render
from claudepeers.cli.follow import EventPrinter
from claudepeers.cli.runner import describe_failure
from claudepeers.common.client import BrokerNotRunning
from cli_support import ROOT

PEER = {
    "id": "ab12cd34", "name": "api", "client_type": "codex", "cwd": "/src/api", "summary": "fixing\nauth",
    "state": "offline", "unread": 3, "branch": "main", "agent_pid": 42, "host": "box",
}
STATUS = {
    "version": "0.1.0", "pid": 99, "socket": "/run/cp.sock", "database": "/db", "tcp": "127.0.0.1:7899",
    "manhole": None, "host": "box", "started_at": "2026-01-01T00:00:00.000Z", "uptime_seconds": 3725.2,
    "peers": [PEER, {**PEER, "id": "zz", "name": "web", "client_type": "claude-code", "state": "online", "unread": 0}],
}


def test_status_shows_health_and_a_block_per_peer() -> None:
    """format_status: version, pid, uptime, socket, database, tcp, counts, and each peer's fields."""
    text = render.format_status(STATUS)
    assert "version 0.1.0, pid 99, up 1h 2m" in text
    assert "socket:   /run/cp.sock" in text and "database: /db" in text and "tcp:      on (127.0.0.1:7899)" in text
    assert "Peers: 2 (1 online, 1 offline, 0 gone), 3 unread" in text
    assert "[codex] api  ID: ab12cd34  offline" in text and "[claude-code] web  ID: zz  online" in text
    assert "summary: fixing auth" in text and "unread: 3" in text and "cwd: /src/api" in text


def test_peer_line_tags_and_flattens_the_summary() -> None:
    """format_peer_line: tag, name, id, state, unread, cwd; the summary on one indented line."""
    assert render.format_peer_line(PEER) == "[codex]  api  (ab12cd34)  offline  3 unread  /src/api\n    fixing auth"
    assert render.format_peers([]) == "No peers."


def test_event_line_shows_time_kind_peer_detail_and_extras() -> None:
    """format_event: time, kind, peer id, detail, then extra fields as key=value."""
    line = render.format_event({"at": "2026-01-01T00:00:00.000Z", "kind": "message", "peer_id": "cli",
                                "detail": "cli -> api: queued", "message_id": 7, "to_id": "ab12cd34"})
    assert line == "2026-01-01T00:00:00.000Z  message   cli  cli -> api: queued  message_id=7 to_id=ab12cd34"


def test_durations_are_short() -> None:
    """duration: seconds, minutes, hours and days in the two largest units."""
    assert [render.duration(s) for s in (5, 65, 3725, 90000)] == ["5s", "1m 5s", "1h 2m", "1d 1h"]


def test_events_pushed_during_the_catch_up_are_printed_once_in_order() -> None:
    """EventPrinter: events held while catching up are printed after it, minus repeats."""
    printed: list[dict] = []
    printer = EventPrinter(printed.append)
    first, second, third = ({"at": str(i), "kind": "k", "detail": str(i)} for i in range(3))
    printer.hold()
    printer.pushed(second)           # pushed before the recent events arrived
    printer.pushed(third)
    for event in (first, second):    # the recent events already include `second`
        printer.emit(event)
    printer.release()
    printer.pushed(dict(third))      # later pushes are never dropped, even if equal
    assert printed == [first, second, third, third]


@pytest.mark.parametrize(
    "exc, status, text",
    [
        (BrokerNotRunning("no broker is running at /s"), 3, "no broker is running at /s"),
        (BrokerNotRunning("permission denied connecting to the broker at /s"), 4, "permission denied"),
        (wire.PermissionDenied(b"uid 0 is not the broker's"), 4, "permission denied: uid 0 is not the broker's"),
        (wire.UnknownPeer(b"no peer has the id or name 'x'"), 1, "no peer has the id or name 'x'"),
        (wire.AmbiguousPeer("'a' matches several peers"), 1, "'a' matches several peers"),
    ],
)
def test_failures_map_to_one_line_and_an_exit_status(exc: Exception, status: int, text: str) -> None:
    """describe_failure: broker down 3, permission 4, peer errors 1, with the broker's text."""
    line, code = describe_failure(exc)
    assert code == status and line.startswith(text)


def test_no_command_module_imports_the_reactor() -> None:
    """Importing the entry point and every command module installs no reactor."""
    modules = sorted({module for module, _, _ in cli_main.COMMANDS.values() if module})
    code = (
        "import sys, importlib\n"
        "import claudepeers.cli.main\n"
        f"for m in {modules!r}: importlib.import_module('claudepeers.cli.' + m)\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [c for c, (m, _, _) in cli_main.COMMANDS.items() if m])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`claude-peers <command> --help` prints its usage and exits 0."""
    with pytest.raises(SystemExit) as exited:
        cli_main.dispatch([command, "--help"])
    assert exited.value.code == 0
    assert f"claude-peers {command}" in capsys.readouterr().out
