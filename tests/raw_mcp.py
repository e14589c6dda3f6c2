"""A blocking MCP (JSON-RPC over stdio) client of a real bridge, for fuzz and soak runs.

The bridge runs under a stand-in agent (:class:`bridge_support.FakeAgent`) through
``bridge_relay.py``, as in the integration tests, but here the test holds the pipes itself:
it can write any line, well-formed or not, and reads the bridge's stdout on a thread.
"""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class BridgeGone(Exception):
    """The bridge closed its stdout (it exited)."""


class StdioBridge:
    """One real bridge: write JSON-RPC lines, read answers; channel notifications are collected."""

    def __init__(self, agent_socket: Path, pidfile: Path, env: dict[str, str], cwd: Path,
                 client_name: str = "claude-code", transcript: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "bridge_relay.py"), str(agent_socket), str(pidfile)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd,
        )
        self.pidfile = pidfile
        self.client_name = client_name
        # With a transcript this client stands in for Claude Code accepting the channel: it
        # writes each channel notification there as Claude Code does (the bridge's evidence).
        self.transcript = transcript
        self._ids = itertools.count(1)
        self._answers: dict[Any, "queue.Queue[dict[str, Any]]"] = {}
        self._lock = threading.Lock()
        self.notifications: list[dict[str, Any]] = []
        self.channel: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self.unmatched: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.unmatched.append({"raw": line.decode(errors="replace")})
                continue
            if not isinstance(message, dict):
                self.unmatched.append({"raw": message})
                continue
            if "method" in message and "id" not in message:
                message["received_at"] = time.time()
                self.notifications.append(message)
                if message["method"] == "notifications/claude/channel":
                    if self.transcript is not None:
                        from bridge_support import transcript_line

                        self.transcript.parent.mkdir(parents=True, exist_ok=True)
                        with open(self.transcript, "ab") as handle:
                            handle.write(transcript_line(message["params"]["content"], message["params"]["meta"]))
                    self.channel.put(message)
                continue
            with self._lock:
                box = self._answers.get(message.get("id"))
            if box is None:
                self.unmatched.append(message)
            else:
                box.put(message)
        self.closed.set()

    # --- writing ------------------------------------------------------------------------

    def send_line(self, data: bytes) -> None:
        """Write raw bytes to the bridge's stdin (a fuzzer's line)."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a JSON-RPC notification."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send_line(json.dumps(message).encode() + b"\n")

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Send a request and wait for its response (the whole JSON-RPC object)."""
        # String ids no fuzzed line uses, so a fuzzer's answer is never taken for ours.
        request_id = f"raw-mcp-{next(self._ids)}"
        box: "queue.Queue[dict[str, Any]]" = queue.Queue()
        with self._lock:
            self._answers[request_id] = box
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send_line(json.dumps(message).encode() + b"\n")
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    return box.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    if self.closed.is_set():
                        raise BridgeGone(f"the bridge exited before answering {method}") from None
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no answer to {method} within {timeout} s") from None
        finally:
            with self._lock:
                self._answers.pop(request_id, None)

    # --- MCP ------------------------------------------------------------------------------

    def initialize(self) -> dict[str, Any]:
        """The classic handshake (as Claude Code 2.1 does it)."""
        answer = self.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": self.client_name, "version": "test"},
        })
        self.notify("notifications/initialized")
        return answer

    def call(self, tool: str, arguments: Any = None, timeout: float = 20.0) -> dict[str, Any]:
        """tools/call; returns the JSON-RPC response (``result`` or ``error``)."""
        params: dict[str, Any] = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        return self.request("tools/call", params, timeout)

    def text(self, tool: str, arguments: Any = None) -> str:
        """Call a tool that must succeed; its text."""
        answer = self.call(tool, arguments)
        result = answer.get("result")
        assert result is not None and not result.get("isError"), answer
        return "\n".join(part.get("text", "") for part in result["content"])

    def bridge_pid(self, timeout: float = 10.0) -> int:
        """The bridge's pid (written by the relay); bounded polling of a file."""
        deadline = time.monotonic() + timeout
        while not self.pidfile.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the relay wrote no pid")
            time.sleep(0.01)
        return int(self.pidfile.read_text())

    def close(self, timeout: float = 10.0) -> None:
        """Close stdin (the bridge exits) and reap the relay."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
