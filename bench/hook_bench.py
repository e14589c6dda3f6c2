"""Benchmark of the prompt hook: ``claude-peers hook UserPromptSubmit`` from start to exit.

Starts a broker in a temporary directory and a stand-in agent process named ``claude``
that runs a real bridge (``claude-peers mcp``, inline delivery: no channels flag) as its
child, so the peer exists as under Claude Code. The stand-in then runs the hook command
the way Claude Code does (``/bin/sh -c '<claude-peers> hook UserPromptSubmit'``, the hook's
JSON on stdin) and times each run from spawning the shell to its exit. Two cases:

- no mail: the hook attaches, finds nothing and prints nothing;
- 5 messages: before each run, 5 messages are sent to the peer (untimed); the hook prints
  them and acknowledges them (checked: 5 frames in the output, nothing on the next run).

For scale it also times ``/bin/sh -c 'python -c pass'`` with the same interpreter, and
reports the hook's own time inside the process (``CLAUDE_PEERS_HOOK_TIMING``), so that
interpreter start and imports can be told apart from the work.

Run: ``.venv/bin/python bench/hook_bench.py [--runs 30] [--json]``. Target: well under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claudepeers.wire.box import json_value, text
from claudepeers.hooks.amp_socket import AmpSocket  # noqa: E402

#: The stand-in agent: starts a bridge, then runs each command it reads (one JSON per line).
STAND_IN = f"""#!{sys.executable}
import json, os, subprocess, sys, time
bridge = subprocess.Popen([sys.executable, "-m", "claudepeers", "mcp"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=open(os.environ["BENCH_BRIDGE_LOG"], "ab"))
# The bridge registers once the agent's MCP handshake tells it the client: do it as Claude Code does.
hello = {{"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {{"protocolVersion": "2025-11-25",
         "capabilities": {{}}, "clientInfo": {{"name": "claude-code", "version": "bench"}}}}}}
bridge.stdin.write((json.dumps(hello) + "\\n" + json.dumps({{"jsonrpc": "2.0", "method": "notifications/initialized"}}) + "\\n").encode())
bridge.stdin.flush()
print(json.dumps({{"bridge": bridge.pid}}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    started = time.perf_counter()
    done = subprocess.run(["/bin/sh", "-c", request["run"]], input=request["stdin"].encode(),
                          capture_output=True)
    seconds = time.perf_counter() - started
    print(json.dumps({{"status": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode(),
                      "seconds": seconds}}), flush=True)
bridge.kill()
"""


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (another process's state) until true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


class Bench:
    """A broker, a stand-in ``claude`` with its bridge, and a sender connection."""

    def __init__(self) -> None:
        """Nothing runs yet; :meth:`start` starts it all, :meth:`close` ends what started."""
        self.broker: subprocess.Popen | None = None
        self.agent: subprocess.Popen | None = None
        self.bridge_pid: int | None = None
        self.sender: AmpSocket | None = None
        self.base = Path(tempfile.mkdtemp(prefix="cp-hb-", dir="/tmp"))

    def start(self) -> None:
        """Start everything in the fresh temporary directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PEER")}
        env.update(HOME=str(self.base), CLAUDE_PEERS_SOCKET=str(self.base / "run" / "cp.sock"),
                   CLAUDE_PEERS_DB=str(self.base / "peers.db"), CLAUDE_PEERS_NO_AUTOSTART="1",
                   CLAUDE_PEER_NAME="target", BENCH_BRIDGE_LOG=str(self.base / "bridge.log"),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.env = env
        self.socket = self.base / "run" / "cp.sock"
        self.broker = subprocess.Popen([sys.executable, "-m", "claudepeers.broker.main"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=open(self.base / "broker.log", "ab"))
        wait_until(self.socket.exists, 15, "the broker's start")
        script = self.base / "bin" / "claude"
        script.parent.mkdir()
        script.write_text(STAND_IN)
        script.chmod(0o755)
        self.agent = subprocess.Popen([str(script)], env=env, cwd=self.base, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self.agent.stdin is not None and self.agent.stdout is not None
        self.bridge_pid = json.loads(self.agent.stdout.readline())["bridge"]
        self.sender = AmpSocket.connect_unix(str(self.socket), 5.0)
        wait_until(self._peer_exists, 20, "the bridge's registration")

    def _peer_exists(self) -> bool:
        status = json_value(self.sender.call("Status"), b"status")
        return any(peer.get("name") == "target" for peer in status.get("peers", []))

    def send(self, count: int) -> None:
        """Send ``count`` messages to the peer (unverified, as the CLI does)."""
        for index in range(count):
            self.sender.call("Send", [(b"to", text("target")), (b"body", text(f"bench message {index}"))])

    def run(self, command: str) -> dict[str, Any]:
        """Have the stand-in agent run ``command`` as a hook; its result with the time taken."""
        payload = {"session_id": "bench", "transcript_path": "/dev/null", "cwd": str(self.base),
                   "hook_event_name": "UserPromptSubmit", "prompt": "go on"}
        assert self.agent.stdin is not None and self.agent.stdout is not None
        self.agent.stdin.write(json.dumps({"run": command, "stdin": json.dumps(payload)}) + "\n")
        self.agent.stdin.flush()
        return json.loads(self.agent.stdout.readline())

    def close(self) -> None:
        """End every process by its pid and remove the directory."""
        if self.sender is not None:
            self.sender.close()
        for pid in (self.bridge_pid, self.agent.pid if self.agent else None):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.agent is not None:
            self.agent.wait(10)
        if self.broker is not None:
            self.broker.send_signal(signal.SIGTERM)
            self.broker.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, 90th percentile and maximum, in milliseconds."""
    ordered = sorted(seconds)
    return {"median_ms": round(1000 * statistics.median(ordered), 1),
            "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def inner_ms(stderr: str) -> float:
    """The hook's own time, as CLAUDE_PEERS_HOOK_TIMING reports it on stderr."""
    for line in stderr.splitlines():
        if line.startswith("claude-peers hook: "):
            return float(line.split()[2])
    raise ValueError(f"no timing line in {stderr!r}")


def main() -> None:
    """Run the cases and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from claudepeers.cli.install import installed_command

    hook = "CLAUDE_PEERS_HOOK_TIMING=1 " + shlex.join([*installed_command(), "hook", "UserPromptSubmit"])
    baseline = shlex.join([sys.executable, "-c", "pass"])
    bench = Bench()
    results: dict[str, Any] = {}
    try:
        bench.start()
        for _ in range(3):  # warm the page cache
            bench.run(hook)
            bench.run(baseline)
        base, idle, idle_inner, mail, mail_inner = [], [], [], [], []
        for _ in range(options.runs):
            base.append(bench.run(baseline)["seconds"])
            done = bench.run(hook)
            assert done["status"] == 0 and done["stdout"] == "", done
            idle.append(done["seconds"])
            idle_inner.append(inner_ms(done["stderr"]))
            bench.send(5)
            done = bench.run(hook)
            assert done["status"] == 0, done
            context = json.loads(done["stdout"])["hookSpecificOutput"]["additionalContext"]
            assert context.count("[claude-peers message #") == 5, context
            mail.append(done["seconds"])
            mail_inner.append(inner_ms(done["stderr"]))
        assert bench.run(hook)["stdout"] == ""  # everything shown was acknowledged
        results = {
            "runs": options.runs,
            "python -c pass": summary(base),
            "hook, no mail": summary(idle),
            "hook, 5 messages": summary(mail),
            "inside the hook, no mail (ms, median)": round(statistics.median(idle_inner), 1),
            "inside the hook, 5 messages (ms, median)": round(statistics.median(mail_inner), 1),
            "load average": os.getloadavg()[0],
        }
    finally:
        bench.close()
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{options.runs} runs each, spawn to exit through /bin/sh -c, as Claude Code runs a hook")
    for name in ("python -c pass", "hook, no mail", "hook, 5 messages"):
        figures = results[name]
        print(f"  {name:<18} median {figures['median_ms']:6.1f} ms   p90 {figures['p90_ms']:6.1f} ms   "
              f"max {figures['max_ms']:6.1f} ms")
    print(f"  inside the hook (after imports), median: no mail "
          f"{results['inside the hook, no mail (ms, median)']} ms, 5 messages "
          f"{results['inside the hook, 5 messages (ms, median)']} ms")
    print(f"  load average at the end: {results['load average']:.2f}")


if __name__ == "__main__":
    main()
