"""The MCP side of the bridge: the SDK's low-level server, fed by our own stdio lines.

:func:`build_server` declares the tools (schemas from :mod:`.tools`) and turns every tool
call into an ``isError`` or normal text result. :class:`McpPipe` connects that server to
the agent: lines read from stdin go into the SDK's read stream, the SDK's answers come
out of its write stream onto stdout, and channel notifications are written to stdout
directly, as whole lines, between them.

Once the agent has finished the handshake, :class:`McpPipe` answers well-formed
``tools/call`` requests itself (:mod:`.direct`), without the SDK's per-request
machinery, which costs as much as the rest of a ``send_message``; everything else, and
every request the SDK would answer differently, still goes to the SDK.
"""

from __future__ import annotations

import json
import math
from typing import Any, Awaitable, Callable, Mapping

import anyio
import mcp_types as types
from mcp_types import METHOD_NOT_FOUND, PROTOCOL_VERSION_META_KEY, ErrorData
from mcp.shared.exceptions import MCPError
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.shared.message import SessionMessage
from twisted.logger import Logger

from claudepeers import __version__
from claudepeers.common.render import channel_content, channel_meta

from claudepeers.bridge.direct import DirectToolCalls, error_line
from claudepeers.bridge.handshake import DISCOVER_REFUSAL, IMPLEMENTATION_NAME, capabilities
from claudepeers.bridge.stdio import MAX_LINE_BYTES, LineWriter
from claudepeers.bridge.broker_calls import ToolResult
from claudepeers.bridge.tool_schemas import TOOLS

CHANNEL_METHOD = "notifications/claude/channel"
CHANNEL_CAPABILITY: dict[str, dict[str, Any]] = {"claude/channel": {}}
PERMISSION_REQUEST_METHOD = "notifications/claude/channel/permission_request"

CallTool = Callable[[str, Mapping[str, Any] | None], Awaitable[ToolResult]]


def build_server(
    instructions: str,
    call_tool: CallTool,
    on_initialized: Callable[[str], None],
    permissions: bool = False,
) -> tuple[Server, InitializationOptions]:
    """The SDK server with our tools, and the options its ``initialize`` answer uses.

    ``on_initialized`` gets the session's protocol version when the agent has sent
    ``notifications/initialized``. With ``permissions`` the answer declares the permission
    relay too (as :func:`~claudepeers.bridge.handshake.capabilities` does on the fast path).
    """

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=tool["description"], input_schema=tool["inputSchema"])
                for name, tool in TOOLS.items()
            ]
        )

    async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await call_tool(params.name, params.arguments)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.text)], is_error=result.is_error
        )

    async def initialized(ctx: Any, params: Any) -> None:
        on_initialized(ctx.protocol_version)

    server: Server = Server(
        IMPLEMENTATION_NAME,
        version=__version__,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call,
    )
    # Tracing middleware costs time on every message and exports nothing here.
    server.middleware = []
    server.add_notification_handler("notifications/initialized", types.NotificationParams, initialized)

    async def discover(ctx: Any, params: Any) -> types.DiscoverResult:
        # Claude Code registers channels only on a classic-era connection: refused here, it
        # falls back to initialize (the entry point refuses a first server/discover itself).
        raise MCPError(code=METHOD_NOT_FOUND, message=DISCOVER_REFUSAL)

    server.add_request_handler("server/discover", types.RequestParams, discover)
    options = server.create_initialization_options(
        NotificationOptions(), experimental_capabilities=capabilities(permissions)["experimental"]
    )
    return server, options


def malformed_answer(line: bytes) -> bytes | None:
    """The JSON-RPC error line for a line the SDK's parser refused, or None (a notification).

    The id is echoed when it can be read, even from a line that is not valid UTF-8, so that
    the agent's request does not wait for ever; otherwise it is null, as the spec says.
    """
    try:
        request = json.loads(line)
        problem: tuple[int, str] | None = None
    except UnicodeDecodeError:
        problem = (types.PARSE_ERROR, "Parse error: the line is not valid UTF-8")
        try:
            request = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            request = None
    except ValueError:
        return error_line(None, ErrorData(code=types.PARSE_ERROR, message="Parse error: the line is not JSON"))
    if not isinstance(request, dict):
        if problem is not None:
            return error_line(None, ErrorData(code=problem[0], message=problem[1]))
        return error_line(None, ErrorData(code=types.INVALID_REQUEST, message="Invalid Request: not a JSON object"))
    request_id = request.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        if "id" not in request and problem is None:
            return None  # a notification is never answered
        return error_line(None, ErrorData(code=problem[0] if problem else types.INVALID_REQUEST,
                                          message=problem[1] if problem else "Invalid Request: bad id"))
    if problem is not None:
        return error_line(request_id, ErrorData(code=problem[0], message=problem[1]))
    params = request.get("params")
    if "params" in request and isinstance(params, list):
        return error_line(request_id, ErrorData(code=types.INVALID_PARAMS,
                                                message="Invalid params: MCP params must be an object"))
    if "params" in request and not isinstance(params, dict):
        return error_line(request_id, ErrorData(code=types.INVALID_REQUEST,
                                                message="Invalid Request: params must be an object"))
    return error_line(request_id, ErrorData(code=types.INVALID_REQUEST, message="Invalid Request"))


def channel_notification(message: Mapping[str, Any]) -> bytes:
    """The ``notifications/claude/channel`` line that shows one message to Claude Code."""
    notification = {
        "jsonrpc": "2.0",
        "method": CHANNEL_METHOD,
        "params": {"content": channel_content(message), "meta": channel_meta(message)},
    }
    return json.dumps(notification, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class McpPipe:
    """Feeds stdin lines to the SDK server and its answers to stdout."""

    log = Logger()

    def __init__(
        self,
        server: Server,
        options: InitializationOptions,
        writer: LineWriter,
        call_tool: CallTool,
        on_modern: Callable[[str], None] = lambda version: None,
        on_thread: Callable[[str], None] = lambda thread_id: None,
        on_permission_request: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self._server = server
        self._on_permission_request = on_permission_request
        self._on_modern = on_modern
        self._modern: str | None = None
        self._on_thread = on_thread
        self._options = options
        self._writer = writer
        # Tool answers go out together at the end of a reactor turn: in a burst, one
        # write for many answers (the SDK's answers below are joined likewise).
        self.direct = DirectToolCalls(call_tool, writer.write_soon)
        self._read_send, self._read_receive = anyio.create_memory_object_stream[Any](math.inf)
        self._write_send, self._write_receive = anyio.create_memory_object_stream[Any](math.inf)
        self._answered: set[Any] = set()

    def already_answered(self, request_id: Any) -> None:
        """The fast path answered this request: drop the SDK's own answer to its replay."""
        self._answered.add(request_id)

    def feed(self, line: bytes) -> None:
        """One line from the agent."""
        try:
            message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except Exception as error:
            # The SDK only logs what it cannot parse; JSON-RPC wants an answer to each
            # request: -32700 for a line that is not JSON, -32600 for an invalid request,
            # -32602 for params that are not an object.
            answer = malformed_answer(line)
            if answer is not None:
                self._writer.write(answer)
            self._read_send.send_nowait(error)
            return
        if self._modern is None and isinstance(message, types.JSONRPCRequest):
            self._note_era(message)
        if isinstance(message, types.JSONRPCRequest) and message.method == "tools/call":
            self._thread_of(message.params)
        if self.direct.offer(message):
            return
        if (self._on_permission_request is not None and isinstance(message, types.JSONRPCNotification)
                and message.method == PERMISSION_REQUEST_METHOD):
            # Claude Code's permission prompt for us to relay (the SDK has no use for it).
            self._on_permission_request(message.params if isinstance(message.params, Mapping) else {})
            return
        self._read_send.send_nowait(SessionMessage(message))

    def _note_era(self, request: types.JSONRPCRequest) -> None:
        """A request in the 2026 envelope (no initialize): the agent speaks the modern era."""
        meta = (request.params or {}).get("_meta")
        if request.method != "initialize" and isinstance(meta, Mapping) and PROTOCOL_VERSION_META_KEY in meta:
            self._modern = str(meta[PROTOCOL_VERSION_META_KEY])
            self._on_modern(self._modern)
    def _thread_of(self, params: Mapping[str, Any] | None) -> None:
        """Codex names its thread in every tool call's ``_meta`` (``threadId``)."""
        meta = params.get("_meta") if isinstance(params, Mapping) else None
        thread_id = meta.get("threadId") if isinstance(meta, Mapping) else None
        if isinstance(thread_id, str) and thread_id:
            self._on_thread(thread_id)

    def session_initialized(self, protocol_version: str) -> None:
        """The handshake is complete: plain tool calls may be answered directly from now on."""
        self._modern = self._modern or protocol_version  # a classic era: stop looking
        self.direct.session_initialized(protocol_version)

    def line_too_long(self) -> None:
        """The agent sent a line past the bound: say so (its id is unknown: null)."""
        self._writer.write(error_line(None, ErrorData(
            code=types.PARSE_ERROR,
            message=f"Parse error: a line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB was discarded",
        )))

    def feed_eof(self) -> None:
        """The agent closed stdin: the SDK server finishes, and so do direct calls."""
        self.direct.close()
        self._read_send.close()

    def write_line(self, data: bytes) -> bool:
        """A line of our own (a notification); True when it is in the pipe already."""
        return self._writer.write(data)

    async def run(self) -> None:
        """Serve until stdin ends."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._pump_out)
            await self._server.run(self._read_receive, self._write_send, self._options)

    async def _pump_out(self) -> None:
        """Write the SDK's answers; those ready together go out in one write."""
        async with self._write_receive:
            async for session_message in self._write_receive:
                lines = [self._encode(session_message)]
                while True:
                    try:
                        lines.append(self._encode(self._write_receive.receive_nowait()))
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                data = b"".join(line for line in lines if line)
                if data:
                    self._writer.write(data)

    def _encode(self, session_message: Any) -> bytes:
        """One answer as a line, or b"" for an answer the fast path already gave."""
        message = session_message.message
        if isinstance(message, (types.JSONRPCResponse, types.JSONRPCError)) and message.id in self._answered:
            self._answered.discard(message.id)
            return b""
        return message.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8") + b"\n"
