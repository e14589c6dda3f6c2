"""Benchmark of the MCP bridge, through its public interface only (MCP over stdio).

Starts a broker in a temporary directory and two bridges, each under a stand-in agent
process (``claude`` with the channels flag, so its bridge pushes; and ``codex``), and
speaks newline-delimited JSON-RPC to them as Claude Code and Codex would. Measures:

- the time from starting ``claude-peers mcp`` to its ``initialize`` answer;
- send-to-notification latency: ``send_message`` on B until A's
  ``notifications/claude/channel`` arrives, one message at a time (p50, p99);
- a burst: 1,000 ``send_message`` requests written to B at once, until A has received all
  1,000 notifications (time, msg/s, lost, duplicated).

Run: ``.venv/bin/python bench/bridge_bench.py [--messages 300] [--burst 1000]``.
DESIGN 6 targets: p50 <= 3 ms, p99 <= 10 ms, >= 2,000 msg/s, none lost or doubled,
``initialize`` within 400 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from support import broker, percentile  # first: it puts this checkout and its tests on sys.path

#: The stand-in Claude Code's session id (its transcript's name).
TRANSCRIPT_SESSION = "bench-session"

STAND_IN = f"""#!{sys.executable}
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "-m", "claudepeers", "mcp"]))
"""


def initialize(client: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": client, "version": "bench"}},
    }


class RawClient:
    """A minimal MCP client on a subprocess's stdio: requests by id, notifications timed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future] = {}
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        self._notified = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str], cwd: Path, client: str) -> tuple["RawClient", float]:
        """Start the bridge and do the handshake; returns the client and the time to initialize."""
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, cwd=cwd, limit=1 << 24,
        )
        self = cls(process)
        answer = self._expect(0)
        self._write(initialize(client))
        await answer
        elapsed = time.perf_counter() - started
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self, elapsed

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    def _expect(self, request_id: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def call_tool_nowait(self, name: str, arguments: dict[str, Any]) -> asyncio.Future:
        """Write a tools/call request; the future resolves with its result."""
        request_id = self._next_id
        self._next_id += 1
        future = self._expect(request_id)
        self._write({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                     "params": {"name": name, "arguments": arguments}})
        return future

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.call_tool_nowait(name, arguments)

    async def wait_notifications(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.notifications) < count:
            self._notified.clear()
            await asyncio.wait_for(self._notified.wait(), max(0.001, deadline - time.perf_counter()))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            now = time.perf_counter()
            message = json.loads(line)
            if "id" in message and message["id"] in self._waiting:
                future = self._waiting.pop(message["id"])
                if not future.done():
                    future.set_result(message)
            elif message.get("method") == "notifications/claude/channel":
                self.notifications.append((now, message["params"]))
                self._notified.set()
                if self.transcript is not None:
                    self._accept(message["params"])

    #: Where this client, standing in for Claude Code, writes the channel messages it accepts.
    transcript: Path | None = None

    def _accept(self, params: dict[str, Any]) -> None:
        """Write the transcript line Claude Code writes for an accepted channel message (its
        ``queue-operation`` enqueue): the bridge's evidence that the push was shown."""
        attributes = "".join(f' {key}="{value}"' for key, value in params["meta"].items())
        tag = f'<channel source="claude-peers"{attributes}>\n{params["content"]}\n</channel>'
        entry = {"type": "queue-operation", "operation": "enqueue", "timestamp": "2026-12-01T00:00:00.000Z",
                 "sessionId": TRANSCRIPT_SESSION, "content": tag}
        with open(self.transcript, "ab") as handle:
            handle.write(json.dumps(entry).encode() + b"\n")

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


def processes(broker_pid: int, a: RawClient, b: RawClient) -> dict[str, Any]:
    """The processes whose CPU time the burst costs: broker, both bridges, this client."""
    import psutil

    def bridge_of(client: RawClient) -> Any:
        children = psutil.Process(client.process.pid).children()
        return children[0] if children else psutil.Process(client.process.pid)

    return {"broker": psutil.Process(broker_pid), "bridge_a (receiver)": bridge_of(a),
            "bridge_b (sender)": bridge_of(b), "bench client": psutil.Process()}


def cpu_seconds(roles: dict[str, Any]) -> dict[str, float]:
    times = {}
    for role, process in roles.items():
        cpu = process.cpu_times()
        times[role] = cpu.user + cpu.system
    return times




async def run(messages: int, burst: int, startups: int) -> dict[str, Any]:
    stack = ExitStack()  # the broker, stopped by pid when the run ends
    process = stack.enter_context(broker(CLAUDE_PEERS_MESSAGES_PER_MINUTE="1000000", CLAUDE_PEERS_LOG_LEVEL="warn"))
    base, env = process.base, process.env
    clients: list[RawClient] = []
    try:
        results: dict[str, Any] = {}

        # 1. Start to initialize answer (no registration needed to answer).
        times = []
        for _ in range(startups):
            client, elapsed = await RawClient.start([sys.executable, "-m", "claudepeers", "mcp"], env, base, "x")
            times.append(elapsed)
            await client.close()
        results["initialize_ms"] = [t * 1000 for t in times]

        # Two agents: A a Claude with channels (push), B a Codex (the sender).
        for kind in ("claude", "codex"):
            (base / kind).mkdir()
            script = base / kind / kind
            script.write_text(STAND_IN)
            script.chmod(0o755)
        agent_a = [str(base / "claude" / "claude"), "--dangerously-load-development-channels", "server:claude-peers"]
        # A's bridge confirms each channel push in Claude Code's session transcript (since
        # session 3): this client writes it there as Claude Code does.
        projects = base / ".claude" / "projects" / "".join(ch if ch.isalnum() else "-" for ch in str(base))
        projects.mkdir(parents=True)
        a, _ = await RawClient.start(agent_a, {**env, "CLAUDE_PEER_NAME": "a",
                                               "CLAUDE_CODE_SESSION_ID": TRANSCRIPT_SESSION}, base, "claude-code")
        a.transcript = projects / f"{TRANSCRIPT_SESSION}.jsonl"
        b, _ = await RawClient.start([str(base / "codex" / "codex")], {**env, "CLAUDE_PEER_NAME": "b"}, base,
                                     "codex-mcp-client")
        clients += [a, b]
        for client in (a, b):
            answer = await client.call_tool("whoami", {})
            assert not answer["result"].get("isError"), answer
        # Warm up both paths.
        for _ in range(20):
            await b.call_tool("send_message", {"to_id": "a", "message": "warm-up"})
        await a.wait_notifications(20)

        # 2. Latency, one message at a time.
        latencies = []
        for index in range(messages):
            seen = len(a.notifications)
            started = time.perf_counter()
            reply = b.call_tool_nowait("send_message", {"to_id": "a", "message": f"latency {index}"})
            await a.wait_notifications(seen + 1)
            latencies.append(a.notifications[seen][0] - started)
            answer = await reply
            assert not answer["result"].get("isError"), answer
        results["latency_ms"] = {
            "count": messages,
            "p50": percentile(latencies, 0.50) * 1000,
            "p99": percentile(latencies, 0.99) * 1000,
            "max": max(latencies) * 1000,
            "mean": statistics.fmean(latencies) * 1000,
        }

        # 3. Burst: everything written at once.
        roles = processes(process.process.pid, a, b)
        cpu_before = cpu_seconds(roles)
        before = len(a.notifications)
        started = time.perf_counter()
        replies = [b.call_tool_nowait("send_message", {"to_id": "a", "message": f"burst {i}"}) for i in range(burst)]
        try:
            await a.wait_notifications(before + burst, timeout=120)
        except asyncio.TimeoutError:
            pass
        received_at = time.perf_counter()
        answers = await asyncio.gather(*replies)
        replied_at = time.perf_counter()
        cpu_after = cpu_seconds(roles)
        got = [params for _, params in a.notifications[before:]]
        arrivals = [at - started for at, _ in a.notifications[before:]]
        bodies = [n["content"] for n in got]  # the content is the body alone (the frame is in meta)
        ids = [n["meta"]["message_id"] for n in got]
        expected = {f"burst {i}" for i in range(burst)}
        results["burst"] = {
            "messages": burst,
            "seconds_to_all_received": received_at - started,
            "seconds_to_all_send_results": replied_at - started,
            "msg_per_s": len(set(bodies) & expected) / (received_at - started),
            "lost": len(expected - set(bodies)),
            "duplicated": len(ids) - len(set(ids)),
            "errors": sum(1 for answer in answers if answer["result"].get("isError")),
            "in_order": ids == sorted(ids, key=int),
            "cpu_s": {role: round(cpu_after[role] - cpu_before[role], 3) for role in roles},
            "received_at_fraction_s": {
                f"{int(f * 100)}%": round(arrivals[int(f * (len(arrivals) - 1))], 4) for f in (0.0, 0.1, 0.5, 0.9, 1.0)
            } if arrivals else {},
        }
        return results
    finally:
        for client in clients:
            await client.close()
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="latency samples (one at a time)")
    parser.add_argument("--burst", type=int, default=1000, help="messages fired at once")
    parser.add_argument("--startups", type=int, default=10, help="bridge starts timed to initialize")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    options = parser.parse_args()
    results = asyncio.run(run(options.messages, options.burst, options.startups))
    if options.json:
        print(json.dumps(results, indent=2))
        return
    init = results["initialize_ms"]
    lat = results["latency_ms"]
    burst = results["burst"]
    print(f"initialize answer after start: p50 {statistics.median(init):.0f} ms, max {max(init):.0f} ms "
          f"({len(init)} starts of `python -m claudepeers mcp`)")
    print(f"send_message -> channel notification: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
          f"max {lat['max']:.2f} ms, mean {lat['mean']:.2f} ms ({lat['count']} messages)")
    print(f"burst of {burst['messages']}: all received in {burst['seconds_to_all_received']:.3f} s "
          f"({burst['msg_per_s']:.0f} msg/s), all send results in {burst['seconds_to_all_send_results']:.3f} s, "
          f"lost {burst['lost']}, duplicated {burst['duplicated']}, errors {burst['errors']}, "
          f"in order {burst['in_order']}")


if __name__ == "__main__":
    main()
