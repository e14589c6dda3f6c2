"""Tool calls answered without the SDK: the same answers, cancellations and EOF as the SDK's."""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any, Mapping

import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from claudepeers.bridge.server import McpPipe, build_server
from claudepeers.bridge.stdio import LineWriter
from claudepeers.bridge.broker_calls import ToolResult
from claudepeers.bridge.tool_schemas import TOOLS

from bridge_support import asyncio_test


class Tool:
    """A tool that answers from its arguments, raises, or waits until cancelled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.cancelled = 0

    async def __call__(self, name: str, arguments: Mapping[str, Any] | None) -> ToolResult:
        self.calls.append((name, arguments))
        if name == "raise":
            raise ValueError("boom")
        if name == "wait":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        text = f"{name} {json.dumps(arguments, ensure_ascii=False, sort_keys=True)}"
        return ToolResult(text + " \u00e9\u2028\x01\"\\</\U0001F600", is_error=name == "send_message")


class PipeUnderTest:
    """An McpPipe on a real pipe, with direct answers on or off (then the SDK answers all)."""

    def __init__(self, direct: bool, version: str = "2025-11-25") -> None:
        self.tool = Tool()
        self.read_fd, write_fd = os.pipe()
        self._write_fd = write_fd
        self.writer = LineWriter(reactor, write_fd)
        self.direct = direct
        server, options = build_server("instructions", self.tool, self._initialized)
        self.pipe = McpPipe(server, options, self.writer, self.tool)
        self.to_sdk: list[Any] = []
        send = self.pipe._read_send.send_nowait

        def recorded(item: Any) -> None:
            self.to_sdk.append(item)
            send(item)

        self.pipe._read_send.send_nowait = recorded  # type: ignore[method-assign]
        self.task = asyncio.ensure_future(self.pipe.run())
        self._received = b""
        os.set_blocking(self.read_fd, False)
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": version, "capabilities": {},
                              "clientInfo": {"name": "claude-code", "version": "1"}}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _initialized(self, version: str) -> None:
        if self.direct:
            self.pipe.session_initialized(version)

    def send(self, message: Any) -> None:
        self.pipe.feed(message if isinstance(message, bytes) else json.dumps(message).encode())

    async def ready(self) -> None:
        """The initialize answer is out and the initialized notification handled."""
        await self.lines(1)
        for _ in range(200):
            if self.pipe.direct.enabled or not self.direct:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        self.to_sdk.clear()

    async def lines(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """The first ``count`` lines written (the initialize answer is the first)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._received.count(b"\n") < count:
            assert asyncio.get_running_loop().time() < deadline, self._received
            try:
                self._received += os.read(self.read_fd, 1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        return self._received.splitlines()[:count]

    async def running(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` tool calls have started."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.tool.calls) < count:
            assert asyncio.get_running_loop().time() < deadline, self.tool.calls
            await asyncio.sleep(0.005)

    async def close(self) -> list[bytes]:
        """End of input; every line written until the SDK finished (nothing comes after)."""
        self.pipe.feed_eof()
        await asyncio.wait_for(self.task, 10)
        drained = Deferred.asFuture(self.writer.drained(), asyncio.get_running_loop())
        while True:  # read while the writer empties its queue into the pipe (it may be full)
            finished = drained.done()
            try:
                self._received += os.read(self.read_fd, 1 << 20)
            except BlockingIOError:
                if finished:
                    break
                await asyncio.sleep(0.005)
        os.close(self.read_fd)
        os.close(self._write_fd)
        return self._received.splitlines()


def by_id(lines: list[bytes]) -> dict[Any, bytes]:
    return {json.loads(line).get("id"): line for line in lines}


def tool_call(request_id: Any, name: Any, arguments: Any = None, **params: Any) -> dict[str, Any]:
    body = {"name": name, **params}
    if arguments is not None:
        body["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": body}


#: Requests of requests() that get no answer at all: a float id and a boolean id are no
#: JSON-RPC request ids, and the SDK drops such a message.
UNANSWERED = 2


def requests() -> list[Any]:
    """Tool calls plain and odd; the SDK answers some of them with errors of its own."""
    calls: list[Any] = [
        tool_call(1, "send_message", {"to_id": "a", "message": "hi"}),
        tool_call("two", "whoami", {}),
        tool_call(3, "whoami"),
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "whoami", "arguments": None}},
        tool_call(5, "whoami", {}, _meta={"progressToken": 5, "claudecode/toolUseId": "toolu_1"}),
        tool_call(6, "whoami", {}, _meta=5),
        tool_call(7, "whoami", {}, _meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
        tool_call(8, "whoami", [1]),
        tool_call(9, 5, {}),
        {"jsonrpc": "2.0", "id": 10, "method": "tools/call"},
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "whoami"}, "extra": 1},
        tool_call(12, "raise", {}),
        tool_call(2**70, "no such tool", {"x": [1, {"y": None}]}),
        tool_call(14, "whoami", {}, task={"ttl": 5}),
        tool_call(15, "whoami", {}, extra="x"),
        tool_call("", "list_peers", {"scope": "repo\u00e9"}),
        b'{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"whoami","arguments":{"a":NaN}}}',
        b'{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"name":"whoami","arguments":{"a":"\\ud800"}}}',
        b'{"jsonrpc":"2.0","id":19,"id":20,"method":"tools/call","params":{"name":"whoami","arguments":{}}}',
        b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"whoami","arguments":{"a":'
        + b"[" * 250 + b"]" * 250 + b"}}}",
        {"jsonrpc": "1.0", "id": 22, "method": "tools/call", "params": {"name": "whoami"}},
        {"jsonrpc": "2.0", "id": 23.0, "method": "tools/call", "params": {"name": "whoami"}},
        {"jsonrpc": "2.0", "id": True, "method": "tools/call", "params": {"name": "whoami"}},
        {"jsonrpc": "2.0", "id": 24, "method": "tools/list"},
    ]
    rng = random.Random(20261125)
    values: list[Any] = [None, 0, -1, 1.5, True, "", "x", "\u00e9\x00", [], {}, [1, "a"], {"k": {"j": [None]}}]
    names = [*TOOLS, "raise", "", "x" * 300]
    for index in range(100, 260):
        arguments: Any = {rng.choice(["to_id", "message", "scope", "z"]): rng.choice(values)
                          for _ in range(rng.randint(0, 3))}
        if rng.random() < 0.1:
            arguments = rng.choice(values)
        request_id: Any = index if rng.random() < 0.8 else f"r{index}"
        calls.append(tool_call(request_id, rng.choice(names), arguments))
    return calls


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
@asyncio_test
async def test_direct_answers_are_the_sdks_byte_for_byte(version: str) -> None:
    """Every tool call, plain or odd, gets the same answer line whether the SDK or the pipe answers."""
    answers = []
    for direct in (False, True):
        pipe = PipeUnderTest(direct, version)
        await pipe.ready()
        sent = requests()
        for request in sent:
            pipe.send(request)
        lines = await pipe.lines(1 + len(sent) - UNANSWERED)
        taken_by_sdk = len(pipe.to_sdk)
        assert await pipe.close() == lines  # and nothing else was answered
        answers.append(sorted(lines[1:]))
    sdk, direct_answers = answers
    assert direct_answers == sdk
    assert len(sdk) > 150
    assert taken_by_sdk < 30  # the odd ones only: the plain calls were answered directly


@asyncio_test
async def test_a_cancelled_call_is_interrupted_and_never_answered() -> None:
    """notifications/cancelled stops the tool and silences its answer; other calls go on."""
    for direct in (False, True):
        pipe = PipeUnderTest(direct)
        await pipe.ready()
        pipe.send(tool_call(7, "wait", {}))
        await pipe.running(1)
        assert pipe.pipe.direct.running == (1 if direct else 0)
        pipe.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "7"}})
        pipe.send(tool_call(8, "whoami", {}))
        lines = await pipe.lines(2)
        assert list(by_id(lines[1:])) == [8], direct
        assert await pipe.close() == lines  # 7 is never answered, not even at the end of input
        assert pipe.tool.cancelled == 1


@asyncio_test
async def test_calls_running_at_end_of_input_are_answered_connection_closed() -> None:
    """At EOF a call still waiting for its tool gets the SDK's "Connection closed" error."""
    ends = []
    for direct in (False, True):
        pipe = PipeUnderTest(direct)
        await pipe.ready()
        pipe.send(tool_call(9, "wait", {}))
        pipe.send(tool_call(9, "wait", {}))  # a duplicate id: both are answered
        await pipe.running(2)
        assert pipe.pipe.direct.running == (2 if direct else 0)
        ends.append((await pipe.close())[1:])
        assert pipe.tool.cancelled == 2
    assert ends[0] == ends[1]
    assert ends[1] == [b'{"jsonrpc":"2.0","id":9,"error":{"code":-32000,"message":"Connection closed"}}'] * 2


@asyncio_test
async def test_only_an_initialized_handshake_session_is_answered_directly() -> None:
    """Before notifications/initialized, and in the 2026 era, the SDK answers everything."""
    pipe = PipeUnderTest(True)
    assert not pipe.pipe.direct.enabled
    await pipe.ready()
    assert pipe.pipe.direct.enabled
    await pipe.close()
    assert not pipe.pipe.direct.enabled
    for version in MODERN_PROTOCOL_VERSIONS:
        pipe.pipe.direct.session_initialized(version)
        assert not pipe.pipe.direct.enabled
