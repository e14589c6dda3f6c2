"""``tools/call`` answered without the SDK's request machinery, exactly as the SDK would.

For each request the SDK spawns a task, builds contexts, a session and several pydantic
models, and hands the answer through a stream: about half of the bridge's CPU time per
``send_message`` in a burst. Once the agent has completed the handshake,
:class:`DirectToolCalls` takes the ``tools/call`` requests the SDK would simply pass to
our handler, runs the tool in a task of its own, and writes the answer line the SDK would
have written. Parsing stays the SDK's (the pipe hands over the message its own adapter
parsed), and so do the SDK's checks of the params; whatever they would reject, or
anything unusual (the 2026 envelope, a session not initialized), goes to the SDK.

What the SDK does around a request is kept too: ``notifications/cancelled`` silences
the answer and cancels the tool's task, and at end of input every call still
running is answered "Connection closed". ``tests/test_bridge_direct.py`` compares the
two paths' answers.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from collections.abc import Mapping
from typing import Any, Awaitable, Callable

import mcp_types as types
from mcp_types import CONNECTION_CLOSED, PROTOCOL_VERSION_META_KEY, ErrorData
from mcp_types import methods as sdk_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params, handler_exception_to_error_data
from twisted.logger import Logger

from claudepeers.bridge.broker_calls import ToolResult

#: One encoder for every answer (``json.dumps`` with options builds a new one per call).
#: Compact and not ASCII-escaped: byte for byte what pydantic writes for the SDK.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

RunTool = Callable[[str, Mapping[str, Any] | None], Awaitable[ToolResult]]
WriteLine = Callable[[bytes], Any]


def result_line(request_id: Any, result: ToolResult) -> bytes:
    """The JSON-RPC answer line the SDK writes for a tool's result (same keys, same order)."""
    answer = {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"content": [{"text": result.text, "type": "text"}], "isError": result.is_error},
    }
    return _ENCODE(answer).encode("utf-8") + b"\n"


def error_line(request_id: Any, error: ErrorData) -> bytes:
    """A JSON-RPC error answer line, built by the SDK's own models (a rare path)."""
    message = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8") + b"\n"


class _Call:
    """One tools/call being answered here; ``silenced`` once the agent cancelled it."""

    __slots__ = ("request_id", "task", "silenced")

    def __init__(self, request_id: Any) -> None:
        self.request_id = request_id
        self.task: asyncio.Future | None = None
        self.silenced = False


class DirectToolCalls:
    """Answers the SDK's plain ``tools/call`` requests after the handshake, as the SDK would.

    Each call runs ``run_tool`` in an asyncio task of its own, like the SDK's handler
    task, so that a cancellation interrupts the tool at the same points.
    """

    log = Logger()

    def __init__(self, run_tool: RunTool, write_line: WriteLine) -> None:
        self._run_tool = run_tool
        self._write_line = write_line
        self._version: str | None = None
        # By (coerced) id, the newest call: what notifications/cancelled reaches, as in the SDK.
        self._by_id: dict[Any, _Call] = {}
        # Every call still running, duplicates of an id included: all are ended at EOF.
        self._running: set[_Call] = set()

    @property
    def enabled(self) -> bool:
        """True once tools/call requests may be answered here."""
        return self._version is not None

    @property
    def running(self) -> int:
        """How many calls are waiting for their tool."""
        return len(self._running)

    def session_initialized(self, protocol_version: str) -> None:
        """The agent sent ``notifications/initialized`` and the SDK accepted it.

        Only a handshake-era session qualifies: there the SDK's gate is open from now on
        and the protocol version is fixed.
        """
        if protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            self._version = protocol_version

    def offer(self, message: Any) -> bool:
        """A parsed message from the agent: True when it was taken (the SDK must not see it)."""
        if self._version is None:
            return False
        if isinstance(message, types.JSONRPCRequest):
            if message.method != "tools/call":
                return False
            return self._take(message, self._version)
        if isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            self._cancel(message.params)
        return False  # the SDK still sees every notification

    def _take(self, request: types.JSONRPCRequest, version: str) -> bool:
        params = request.params
        if params is None:
            return False
        meta = params.get("_meta")
        if isinstance(meta, Mapping) and PROTOCOL_VERSION_META_KEY in meta:
            return False  # the SDK refuses the 2026 envelope on this session
        name = params.get("name")
        arguments = params.get("arguments")
        if not (len(params) == 2 and type(name) is str and type(arguments) is dict):
            # Anything but the plain {name, arguments} (which both checks pass as it is):
            # the SDK's two checks, in its order: the version's schema, the handler's model.
            try:
                sdk_methods.validate_client_request("tools/call", version, params)
                typed = types.CallToolRequestParams.model_validate(params, by_name=False)
            except Exception:
                return False  # the SDK answers with its own error
            name, arguments = typed.name, typed.arguments
        call = _Call(request.id)
        self._by_id[coerce_request_id(request.id)] = call
        self._running.add(call)
        call.task = asyncio.ensure_future(self._run_tool(name, arguments))
        call.task.add_done_callback(partial(self._done, call))
        return True

    def _done(self, call: _Call, task: asyncio.Future) -> None:
        """The tool finished: write its answer, unless the agent cancelled the call."""
        self._running.discard(call)
        key = coerce_request_id(call.request_id)
        if self._by_id.get(key) is call:
            del self._by_id[key]
        if task.cancelled():
            return
        error = task.exception()  # retrieved even when silenced, or asyncio complains
        if call.silenced:
            return
        if error is None:
            try:
                self._write_line(result_line(call.request_id, task.result()))
                return
            except Exception as failure:  # an answer that cannot be encoded
                error = failure
        # The SDK answers a handler's exception as an error (code 0 unless it is an MCP error).
        data = handler_exception_to_error_data(error)
        if data is None:
            self.log.error("tool call {request_id!r} raised {error!r}", request_id=call.request_id, error=error)
            data = ErrorData(code=0, message=str(error))
        self._write_line(error_line(call.request_id, data))

    def _cancel(self, params: Mapping[str, Any] | None) -> None:
        """The agent gave up on a request: it is never answered, and its tool is interrupted."""
        request_id = cancelled_request_id_from_params(params)
        if request_id is None:
            return
        call = self._by_id.get(coerce_request_id(request_id))
        if call is None or call.task is None:
            return
        call.silenced = True
        call.task.cancel()

    def close(self) -> None:
        """End of input: answer every running call "Connection closed", as the SDK does."""
        self._version = None
        for call in list(self._running):
            if call.silenced:
                continue
            call.silenced = True
            closed = ErrorData(code=CONNECTION_CLOSED, message="Connection closed")
            self._write_line(error_line(call.request_id, closed))
            if call.task is not None:
                call.task.cancel()
