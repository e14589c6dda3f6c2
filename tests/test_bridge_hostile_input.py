"""A real bridge under malformed MCP input: every request gets an answer, and garbage is cheap.

One bridge process (no broker: the tools answer "not reachable", which is an answer too)
gets, after the handshake, lines a broken or hostile client might send.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from claudepeers.bridge.tool_schemas import TOOLS
from claudepeers.bridge.server import malformed_answer
from conftest import ROOT, broker_env

HELLO = [
    {"jsonrpc": "2.0", "id": 0, "method": "initialize",
     "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
]


class Answers:
    """Reads the bridge's stdout line by line, with a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        self._out = process.stdout
        self._buffer = b""

    def next(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON-RPC line the bridge writes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([self._out], [], [], max(deadline - time.monotonic(), 0))
            assert readable, "the bridge did not answer"
            chunk = self._out.read1(1 << 20)
            assert chunk, "the bridge closed stdout"
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)


@pytest.mark.parametrize(("line", "request_id", "code"), [
    (b'{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"x":"\xff"}}', 5, -32700),
    (b'{"jsonrpc":"2.0","id":6,"method":"tools/list","params":"all"}', 6, -32600),
    (b'{"jsonrpc":"2.0","id":"7","method":"tools/call","params":["whoami"]}', "7", -32602),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}', None, -32600),
    (b"[1, 2]", None, -32600),
    (b"not json", None, -32700),
])
def test_each_malformed_request_gets_the_error_the_spec_names(line: bytes, request_id: Any, code: int) -> None:
    """Parse error, invalid request or invalid params, with the request's id when it has one."""
    answer = malformed_answer(line)
    assert answer is not None
    error = json.loads(answer)
    assert error["id"] == request_id and error["error"]["code"] == code


def test_a_malformed_notification_is_never_answered() -> None:
    """A notification (no id) gets no answer, even a malformed one."""
    assert malformed_answer(b'{"jsonrpc":"2.0","method":"notifications/x","params":"x"}') is None


@pytest.mark.slow
def test_malformed_lines_get_json_rpc_errors_with_their_ids(short_dir: Path) -> None:
    """Invalid UTF-8, params that are a string or a list, non-JSON, a line past the bound and
    an 8 MiB send each get their answer (with the id when there is one), and the bridge
    stays quick and serving."""
    bridge = subprocess.Popen(
        [sys.executable, "-m", "claudepeers.bridge.main"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=broker_env(short_dir, CLAUDE_PEERS_CALL_TIMEOUT_SECONDS="1"), cwd=ROOT,
    )
    try:
        assert bridge.stdin is not None
        answers = Answers(bridge)

        def send(data: bytes) -> None:
            assert bridge.stdin is not None
            bridge.stdin.write(data + b"\n")
            bridge.stdin.flush()

        for message in HELLO:
            send(json.dumps(message).encode())
        assert answers.next()["id"] == 0
        send(b'{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"x":"\xff\xfe"}}')
        assert answers.next() == {"jsonrpc": "2.0", "id": 5,
                                  "error": {"code": -32700, "message": "Parse error: the line is not valid UTF-8"}}
        send(b'{"jsonrpc":"2.0","id":6,"method":"tools/list","params":"all"}')
        answer = answers.next()
        assert answer["id"] == 6 and answer["error"]["code"] == -32600
        send(b'{"jsonrpc":"2.0","id":"seven","method":"tools/call","params":["whoami"]}')
        answer = answers.next()
        assert answer["id"] == "seven" and answer["error"]["code"] == -32602
        send(b"this is not json")
        answer = answers.next()
        assert answer["id"] is None and answer["error"]["code"] == -32700
        send(b'{"jsonrpc":"2.0","method":"notifications/whatever","params":"x"}')  # never answered
        started = time.monotonic()
        send(b"x" * (17 * 1024 * 1024))
        answer = answers.next()
        assert answer["id"] is None and "longer than 16 MiB" in answer["error"]["message"]
        big = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
               "params": {"name": "send_message", "arguments": {"to_id": "bob", "message": "y" * (9 * 1024 * 1024)}}}
        send(json.dumps(big).encode())
        result = answers.next()["result"]
        assert result["isError"] and "the wire carries at most 8,388,608 bytes" in result["content"][0]["text"]
        assert time.monotonic() - started < 10.0  # garbage costs linear time, not seconds per MB
        send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}).encode())
        assert len(answers.next()["result"]["tools"]) == len(TOOLS)
    finally:
        bridge.kill()
        bridge.wait()
