"""Benchmark of waking an idle interactive Codex: from the send to the model request carrying it.

Starts a broker at the default paths of a temporary HOME and one real interactive Codex TUI
in tmux against the stand-in Responses API of ``tests/agent_standins.py`` (see
``tests/codex_tui.py``: the stand-in model calls ``set_name`` on ``BIND <name>`` and
``check_messages`` on our queued notice). The thread binds with one tool call; then, one
at a time, with the thread idle, a sender on its own broker connection calls ``Send``
(what a sender's ``send_message`` tool call does) and we time from that call to the
model request whose input carries the message (after the woken turn's check_messages).
Each send must be answered ``woke``.

Run: ``.venv/bin/python bench/codex_queue_bench.py [--codex PATH] [--messages 20] [--json]``.
Target: p50 <= 600 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from support import percentile  # first: it puts this checkout and its tests on sys.path

from claudepeers.wire import commands as wire  # noqa: E402
from codex_tui import CodexTuis  # noqa: E402
from conftest import BrokerProcess, broker_env  # noqa: E402
from raw_amp import RawAMP  # noqa: E402

DEFAULT_CODEX = "/work/clis/codex-0.171.0/node_modules/.bin/codex"



def measure(codex: str, messages: int) -> dict:
    """Run the benchmark; the figures in milliseconds."""
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    env = broker_env(base, PATH="/usr/bin:/bin",
                     CLAUDE_PEERS_SOCKET=str(base / ".claude" / "run" / "claude-peers.sock"),
                     CLAUDE_PEERS_DB=str(base / ".claude-peers.db"))
    broker = BrokerProcess(base, env).start()
    tuis = CodexTuis(codex, broker.env, base)
    latencies: list[float] = []
    try:
        tuis.configure()
        tuis.open("a")
        tuis.bind("a", "bench")
        sender = RawAMP.unix(str(broker.socket_path))
        for number in range(messages):
            tuis.tmux.wait_for_screen("Ask Codex", 30, "a")  # idle: the previous woken turn has ended
            time.sleep(0.5)  # and its last request is answered
            seen = len(tuis.api.requests)
            text = f"BENCH-{number}-{time.time_ns()}"
            started = time.monotonic()
            answer = sender.call(wire.Send, to="bench", body=text)
            assert answer["status"] == "woke", answer
            _, arrived = tuis.api.wait_for_text(text, 30, after=seen)
            latencies.append((arrived - started) * 1000)
        sender.close()
    finally:
        tuis.close()
        broker.stop()
    version = Path(codex).resolve().parts
    return {
        "codex": next((part for part in version if part.startswith("codex-")), codex),
        "messages": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(percentile(latencies, 0.9), 1),
        "max_ms": round(max(latencies), 1),
        "min_ms": round(min(latencies), 1),
    }


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codex", default=DEFAULT_CODEX, help="the codex binary (default: 0.171.0)")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.codex, args.messages)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['codex']}: {result['messages']} messages, send -> model request carrying it: "
              f"p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, max {result['max_ms']} ms "
              f"(min {result['min_ms']} ms)")


if __name__ == "__main__":
    main()
