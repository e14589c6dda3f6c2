"""Benchmark of the rewake path: from the sender's send to the model request that carries the message.

For each Claude Code binary given, a broker runs at the default paths under a temporary
HOME, ``claude-peers install --claude --config-file --hooks`` writes the MCP server and
the hooks, and Claude Code runs interactive in tmux (no channels flag: the bridge delivers
inline) against the stand-in model API of ``tests/agent_standins.py``. The session is left
idle. For each message: wait until the broker holds an armed waiter (the previous turn's
Stop hook), then time from the ``Send`` call (the sender's tool call: one AMP call on the
broker's socket, as a bridge makes it) to the arrival of the model request whose JSON
carries the message's marker. It also notes when the waiter process exited, which splits
each figure into ours (send, waiter, acknowledgement, exit) and Claude Code's (from the
hook's exit to its request). ``--baseline N`` also times Claude Code alone: N sessions
whose only hook is a SessionStart ``asyncRewake`` shell hook that sleeps 3 s, notes the
time and exits 2, from that exit to the request carrying its text (the floor on this
machine at this moment, nothing of ours involved).

Run: ``.venv/bin/python bench/rewake_bench.py --claude /work/clis/claude-2.1.197/node_modules/.bin/claude
--claude /work/clis/claude-2.1.332/node_modules/.bin/claude [--messages 25] [--json]``.
Target: p50 <= 600 ms.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psutil  # noqa: E402

from agent_standins import StandInApi  # noqa: E402
from agent_tmux import environment_path  # noqa: E402
from claude_tmux import ClaudeSession, seed_home  # noqa: E402
from cli_support import BrokerView, cli  # noqa: E402
from conftest import BrokerProcess, home_env  # noqa: E402


def exit_time(pid: int, timeout: float) -> float:
    """``time.monotonic()`` soon after process ``pid`` exits (watched every 2 ms)."""
    deadline = time.monotonic() + timeout
    try:
        process = psutil.Process(pid)
        while time.monotonic() < deadline:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.002)
    except psutil.NoSuchProcess:
        pass
    return time.monotonic()


def bench_one(claude: str, messages: int) -> dict[str, Any]:
    """Send ``messages`` messages one at a time to an idle session; the timings in ms."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    env = home_env(base, PATH=environment_path(), CLAUDE_PEER_NAME="bench")
    broker = BrokerProcess(base, env).start()
    api = StandInApi()
    session = None
    totals: list[float] = []
    ours: list[float] = []
    statuses: list[str] = []
    try:
        installed = cli(env, "install", "--claude", "--config-file", "--hooks")
        assert installed.returncode == 0, installed.stderr
        seed_home(base, base, gate=False)
        session = ClaudeSession(claude, base, env).start(api.url)
        view = BrokerView(broker.socket_path)
        waiter = view.wait_for_waiter("bench")
        version = session.screen()
        for number in range(messages):
            marker = f"REWAKE-BENCH-{number:03d}-{time.monotonic_ns()}"
            started = time.monotonic()
            answer = view.send("bench", marker)
            exited = exit_time(waiter, 10)
            _, arrived = api.wait_for_text(marker, 30)
            statuses.append(answer["status"])
            totals.append(1000 * (arrived - started))
            ours.append(1000 * (exited - started))
            waiter = view.wait_for_waiter("bench", other_than=waiter)
        session.exit()
    finally:
        if session is not None:
            session.stop()
        api.close()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    found = re.search(r"Claude Code v[0-9.]+", version)
    line = found.group(0) if found else claude
    return {
        "claude": claude, "banner": line, "messages": messages,
        "statuses": sorted(set(statuses)),
        "p50_ms": round(statistics.median(totals), 1), "max_ms": round(max(totals), 1),
        "min_ms": round(min(totals), 1),
        "ours_p50_ms": round(statistics.median(ours), 1), "ours_max_ms": round(max(ours), 1),
        "claude_p50_ms": round(statistics.median(t - o for t, o in zip(totals, ours)), 1),
        "each_ms": [round(t, 1) for t in totals], "ours_each_ms": [round(o, 1) for o in ours],
    }


def baseline_one(claude: str) -> float:
    """Claude Code alone: from a plain asyncRewake hook's exit to the request it caused, in ms."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    (base / ".claude").mkdir()
    stamp = base / "exited"
    command = f"sleep 3; date +%s.%N > {stamp}; echo BASELINE-WAKE >&2; exit 2"
    hook = {"type": "command", "command": command, "asyncRewake": True, "timeout": 60}
    (base / ".claude" / "settings.json").write_text(json.dumps({"hooks": {"SessionStart": [{"hooks": [hook]}]}}))
    seed_home(base, base, gate=False)
    api = StandInApi()
    session = ClaudeSession(claude, base, {"PATH": "/usr/bin:/bin", "CLAUDE_PEER_NAME": "baseline"}).start(api.url)
    try:
        _, arrived = api.wait_for_text("BASELINE-WAKE", 60)
        wall = time.time() - (time.monotonic() - arrived)
        return 1000 * (wall - float(stamp.read_text()))
    finally:
        session.exit()
        api.close()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    """Run the benchmark for each ``--claude`` binary; print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claude", action="append", required=True, help="a claude binary (repeat for several)")
    parser.add_argument("--messages", type=int, default=25)
    parser.add_argument("--baseline", type=int, default=0, help="sessions timing Claude Code alone, per binary")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench_one(claude, args.messages) for claude in args.claude]
    for result in results:
        floor = [baseline_one(result["claude"]) for _ in range(args.baseline)]
        if floor:
            result["baseline_each_ms"] = [round(f, 1) for f in floor]
            result["baseline_p50_ms"] = round(statistics.median(floor), 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"{result['banner']}: {result['messages']} messages, send -> model request "
              f"p50 {result['p50_ms']} ms, max {result['max_ms']} ms (min {result['min_ms']}); "
              f"send -> hook exit p50 {result['ours_p50_ms']} ms (max {result['ours_max_ms']}); "
              f"hook exit -> request p50 {result['claude_p50_ms']} ms; status {','.join(result['statuses'])}"
              + (f"; Claude Code alone, plain hook exit -> request p50 {result['baseline_p50_ms']} ms"
                 if "baseline_p50_ms" in result else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
