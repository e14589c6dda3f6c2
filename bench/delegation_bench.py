"""Benchmark of a delegation round trip through two real bridges and a real broker (DESIGN 8).

One round trip, as two agents with no thinking time would do it: A calls
``send_message`` (a task for B) and, once it is answered, ``wait_for_reply`` on it; B's
bridge shows the task (a channel notification: B is a Claude Code with push forced, so
that the pipe is the evidence and no transcript is needed); B at once calls
``send_message`` with ``reply_to``; A's waiting call returns the reply. Timed from A's
``send_message`` to the end of A's ``wait_for_reply``, p50/p99, for a waiting Codex (its
replies would otherwise go inline) and a waiting Claude Code (its replies would otherwise
be pushed). The bridges are spoken to over stdio as the agents would (bridge_bench.py's
client).

Run: ``python bench/delegation_bench.py [--trips 200]``. Target (issue 14): p50 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from contextlib import ExitStack
from typing import Any

from support import broker, percentile  # first: it puts this checkout and its tests on sys.path

from bridge_bench import STAND_IN, RawClient


def text(answer: dict[str, Any]) -> str:
    """The text of a tools/call answer; an error fails the bench."""
    result = answer["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]


async def round_trips(a: RawClient, b: RawClient, b_name: str, trips: int) -> dict[str, Any]:
    """``trips`` round trips of A delegating to B; the figures in ms."""
    totals, shown = [], []
    for index in range(trips):
        seen = len(b.notifications)
        started = time.perf_counter()
        sent = text(await a.call_tool("send_message", {"to_id": b_name, "message": f"task {index}"}))
        task = int(re.match(r"Message #(\d+) ", sent).group(1))  # type: ignore[union-attr]
        waiting = a.call_tool_nowait("wait_for_reply", {"message_id": task, "timeout_seconds": 10})
        await b.wait_notifications(seen + 1)
        at, note = b.notifications[seen]
        shown.append(at - started)
        assert note["meta"]["message_id"] == str(task), note
        replied = b.call_tool_nowait("send_message", {"to_id": note["meta"]["from_id"], "reply_to": task,
                                                      "message": f"done {index}"})
        result = text(await waiting)
        totals.append(time.perf_counter() - started)
        # The reply, once: in the wait's result, or (it came first) already shown to A.
        assert f"done {index}" in result or "Already shown to you" in result, result
        text(await replied)
    ms = [t * 1000 for t in totals]
    return {"trips": trips, "p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "max": max(ms),
            "mean": statistics.fmean(ms), "task_shown_p50": percentile([t * 1000 for t in shown], 0.5)}


async def run(trips: int) -> dict[str, Any]:
    stack = ExitStack()  # the broker, stopped by pid when the run ends
    process = stack.enter_context(broker(CLAUDE_PEERS_MESSAGES_PER_MINUTE="1000000", CLAUDE_PEERS_LOG_LEVEL="warn"))
    base, env = process.base, process.env
    clients: list[RawClient] = []
    try:
        for kind in ("claude", "codex"):
            (base / kind).mkdir()
            script = base / kind / kind
            script.write_text(STAND_IN)
            script.chmod(0o755)
        claude = [str(base / "claude" / "claude"), "--dangerously-load-development-channels", "server:claude-peers"]
        push = {**env, "CLAUDE_PEERS_DELIVERY": "push"}
        worker, _ = await RawClient.start(claude, {**push, "CLAUDE_PEER_NAME": "worker"}, base, "claude-code")
        codex, _ = await RawClient.start([str(base / "codex" / "codex")], {**env, "CLAUDE_PEER_NAME": "lead-codex"},
                                         base, "codex-mcp-client")
        lead, _ = await RawClient.start(claude, {**push, "CLAUDE_PEER_NAME": "lead-claude"}, base, "claude-code")
        clients += [worker, codex, lead]
        for client in clients:
            text(await client.call_tool("whoami", {}))
        await round_trips(codex, worker, "worker", 20)  # warm up
        results = {"codex_waits": await round_trips(codex, worker, "worker", trips),
                   "claude_waits": await round_trips(lead, worker, "worker", trips)}
        return results
    finally:
        for client in clients:
            await client.close()
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trips", type=int, default=200, help="round trips per pair")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    options = parser.parse_args()
    results = asyncio.run(run(options.trips))
    if options.json:
        print(json.dumps(results, indent=2))
        return
    for label, key in (("a Codex waits for a Claude Code", "codex_waits"),
                       ("a Claude Code waits for a Claude Code", "claude_waits")):
        r = results[key]
        print(f"delegation round trip, {label}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, max {r['max']:.2f} ms, "
              f"mean {r['mean']:.2f} ms (task shown to B after p50 {r['task_shown_p50']:.2f} ms; {r['trips']} trips)")


if __name__ == "__main__":
    main()
