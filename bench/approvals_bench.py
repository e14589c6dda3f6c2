"""Benchmark of the permission relay: from Claude Code's prompt to the list, and from the
person's answer back to Claude Code.

Starts a broker in a temporary directory, a stand-in agent process named ``claude`` (with the
channels flag, as the tests do) and a real bridge under it whose stdio this script holds,
playing Claude Code. Each round:

- **listed**: the script writes ``notifications/claude/channel/permission_request`` to the
  bridge and asks the broker (``ListApprovals``, over a blocking AMP socket, back to back) until
  the request is listed;
- **answered**: it sends ``AnswerApproval`` (the operator check walks this process's
  ancestors) and waits for ``notifications/claude/channel/permission`` on the bridge's stdout.

It also times one ``claude-peers approve`` run end to end (interpreter start included).

Run: ``.venv/bin/python bench/approvals_bench.py [--rounds 50] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from support import percentile  # first: it puts this checkout and its tests on sys.path

from claudepeers.hooks.amp_socket import AmpSocket  # noqa: E402
from claudepeers.wire.box import json_value, text  # noqa: E402

from bridge_support import FakeAgent  # noqa: E402
from conftest import BrokerProcess, broker_env  # noqa: E402
from raw_mcp import StdioBridge  # noqa: E402


def answered(bridge: StdioBridge, request_id: str, timeout: float = 10.0) -> None:
    """Wait until the bridge wrote the answer to ``request_id`` (its reader thread collects lines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in reversed(bridge.notifications):
            if note["method"] == "notifications/claude/channel/permission" and note["params"]["request_id"] == request_id:
                return
        time.sleep(0.0005)  # the reader thread's list: polled finely, the figure is milliseconds
    raise TimeoutError(f"no answer to {request_id}")



def run(rounds: int) -> dict[str, Any]:
    """The measurements, in milliseconds."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    env = broker_env(base)
    broker = BrokerProcess(base, env).start()
    agent = FakeAgent(base, "alpha", "claude", base, dict(env), channels=True).start()
    bridge = StdioBridge(agent.socket_path, base / "alpha.pid", dict(agent.env), agent.cwd)
    listed_ms: list[float] = []
    answered_ms: list[float] = []
    try:
        bridge.initialize()
        bridge.text("whoami")
        sock = AmpSocket.connect_unix(env["CLAUDE_PEERS_SOCKET"], 10.0)
        for number in range(rounds):
            request_id = "".join("abcdefghijkmnopqrstuvwxyz"[(number // 25 ** k) % 25] for k in range(5))
            started = time.perf_counter()
            bridge.notify("notifications/claude/channel/permission_request", {
                "request_id": request_id, "tool_name": "Bash", "description": "Create the marker file",
                "input_preview": '{ "command": "touch /tmp/x" }'})
            while not any(a["request_id"] == request_id for a in json_value(sock.call("ListApprovals", []), b"approvals")):
                pass
            listed_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            sock.call("AnswerApproval", [(b"request", text(request_id)), (b"behavior", text("allow"))])
            answered(bridge, request_id)
            answered_ms.append((time.perf_counter() - started) * 1000)
        sock.close()
        bridge.notify("notifications/claude/channel/permission_request", {
            "request_id": "zzzzz", "tool_name": "Bash", "description": "", "input_preview": ""})
        time.sleep(0.2)  # listed by then (the figures above say how soon)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "claudepeers", "approve", "zzzzz"], env=env,
                              capture_output=True, text=True, timeout=60)
        cli_ms = (time.perf_counter() - started) * 1000
        assert done.returncode == 0, done.stderr
    finally:
        bridge.close()
        agent.cleanup()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "rounds": rounds,
        "listed_ms": {"median": statistics.median(listed_ms), "p95": percentile(listed_ms, 0.95)},
        "answered_ms": {"median": statistics.median(answered_ms), "p95": percentile(answered_ms, 0.95)},
        "cli_approve_ms": cli_ms,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    """Parse options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    figures = run(options.rounds)
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"permission relay, {figures['rounds']} rounds (load average {figures['load_average']:.1f}):")
    for key, label in (("listed_ms", "prompt -> listed by the broker"),
                       ("answered_ms", "AnswerApproval -> answer on the bridge's stdout")):
        print(f"  {label}: median {figures[key]['median']:.1f} ms, p95 {figures[key]['p95']:.1f} ms")
    print(f"  `claude-peers approve` end to end: {figures['cli_approve_ms']:.0f} ms")


if __name__ == "__main__":
    main()
