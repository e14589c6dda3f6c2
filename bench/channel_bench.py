"""Channel push latency with the real Claude Code: from the send to the model request carrying it.

One interactive ``claude`` (default: ``CLAUDE_PEERS_TEST_CLAUDE_NEW``, Claude Code 2.1.332)
runs in tmux, offline, against the stand-in Messages API of ``tests/agent_standins.py``,
with ``--dangerously-load-development-channels server:claude-peers`` (``tests/claude_tmux.py``);
``--hooks`` installs the prompt hooks too, and then every channel turn first waits for the
UserPromptSubmit hook (a Python process start). The sender is a registered peer of its own: a stand-in
Codex session whose bridge gets ``tools/call send_message`` over MCP stdio, exactly as an
agent's tool call arrives (``tests/raw_mcp.py``). For each message the clock starts just
before that tool call is written and stops when the stand-in API receives the model request
that carries the message (Claude Code's channel turn). The sender's answer must say
``shown`` (confirmed in Claude Code's transcript). Messages are sent one at a time, each
after the previous one reached the model and its turn ended.

    python bench/channel_bench.py [--messages 20] [--claude PATH] [--hooks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from bridge_support import FakeAgent  # noqa: E402
from agent_tmux import CLAUDE_NEW  # noqa: E402
from claude_tmux import DEV_FLAG, Scenario  # noqa: E402
from raw_mcp import StdioBridge  # noqa: E402


def main() -> int:
    """Run the benchmark and print p50 and max (ms)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--claude", default=CLAUDE_NEW or os.environ.get("CLAUDE_PEERS_TEST_CLAUDE"))
    parser.add_argument("--hooks", action="store_true",
                        help="also install the prompt hooks (each channel turn then waits for the UserPromptSubmit hook)")
    args = parser.parse_args()
    if not args.claude:
        print("no claude binary: set CLAUDE_PEERS_TEST_CLAUDE_NEW (npm install @anthropic-ai/claude-code)")
        return 2
    base = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))
    scenario = Scenario(base, args.claude, DEV_FLAG, hooks=args.hooks).start()
    sender_agent = FakeAgent(base, "sender", "codex", base, dict(scenario.env)).start()
    sender = StdioBridge(sender_agent.socket_path, base / "sender.pid", sender_agent.env, base,
                         client_name="codex-mcp-client")
    latencies: list[float] = []
    statuses: list[str] = []
    try:
        decision = scenario.channel_decided()
        print(f"claude {args.claude}, prompt hooks {'installed' if args.hooks else 'not installed'}\n"
              f"  {decision.split('] ', 1)[-1]}")
        sender.initialize()
        target = scenario.peer["id"]
        time.sleep(1.0)  # let the session settle after its start (its first transcript write)
        for number in range(args.messages):
            tag = f"BENCH-{number:03d}-{os.urandom(3).hex()}"
            before = len(scenario.api.requests)  # type: ignore[attr-defined]
            started = time.monotonic()
            answer = sender.text("send_message", {"to_id": target, "message": tag})
            _, arrived = scenario.api.wait_for_text(tag, 15)  # type: ignore[attr-defined]
            latencies.append((arrived - started) * 1000)
            statuses.append(answer.split(" ")[2] if answer.startswith("Message #") else answer)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(scenario.api.requests) <= before:  # type: ignore[attr-defined]
                time.sleep(0.01)
            time.sleep(1.0)  # the turn ends and the session is idle again (the stand-in answers at once)
        duplicates = sum(json.dumps(scenario.api.requests[-1]).count(f"BENCH-{n:03d}-")  # type: ignore[attr-defined]
                         > 1 for n in range(args.messages))
    finally:
        sender.close()
        sender_agent.cleanup()
        scenario.stop()
    ordered = sorted(latencies)
    print(f"  {len(latencies)} messages, sender's status words: {sorted(set(statuses))}, shown twice: {duplicates}")
    print(f"  send_message tool call -> model request carrying it: p50 {statistics.median(ordered):.0f} ms, "
          f"max {ordered[-1]:.0f} ms (min {ordered[0]:.0f} ms)")
    print("  all (ms): " + ", ".join(f"{value:.0f}" for value in latencies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
