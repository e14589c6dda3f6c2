"""The fast ``initialize`` answer, the client type and the delivery decision."""

from __future__ import annotations

import json
import math
import os

import anyio
import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage
from mcp_types import version as sdk_version

from claudepeers.bridge import handshake
from claudepeers.bridge.server import build_server
from claudepeers.bridge.broker_calls import ToolResult

from bridge_support import asyncio_test


def initialize_request(protocol: str = "2025-06-18", client: str = "claude-code") -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": protocol, "capabilities": {}, "clientInfo": {"name": client, "version": "1"}},
    }


async def sdk_answer(request: dict, instructions: str) -> dict:
    """What the SDK's own server answers to ``request``."""

    async def no_tool(name: str, arguments: object) -> ToolResult:
        return ToolResult("")

    server, options = build_server(instructions, no_tool, lambda version: None)
    read_send, read_receive = anyio.create_memory_object_stream(math.inf)
    write_send, write_receive = anyio.create_memory_object_stream(math.inf)
    message = types.jsonrpc_message_adapter.validate_json(json.dumps(request), by_name=False)
    read_send.send_nowait(SessionMessage(message))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.run, read_receive, write_send, options)
        answer = await write_receive.receive()
        read_send.close()
    return json.loads(answer.message.model_dump_json(by_alias=True, exclude_unset=True))


@pytest.mark.parametrize("protocol", ["2024-11-05", "2025-06-18", "2025-11-25", "1999-01-01"])
@asyncio_test
async def test_fast_answer_equals_the_sdk_answer(protocol: str) -> None:
    """The answer written before the SDK is imported is the one the SDK would give."""
    request = initialize_request(protocol)
    instructions = handshake.instructions_for("push", "claude-peers")
    fast = json.loads(handshake.initialize_answer(request, instructions))
    assert fast == await sdk_answer(request, instructions)
    assert fast["result"]["capabilities"]["experimental"] == {"claude/channel": {}}


def test_protocol_versions_match_the_sdk() -> None:
    """Our copy of the SDK's handshake versions is current."""
    assert handshake.HANDSHAKE_PROTOCOL_VERSIONS == tuple(sdk_version.HANDSHAKE_PROTOCOL_VERSIONS)
    assert handshake.LATEST_HANDSHAKE_VERSION == sdk_version.LATEST_HANDSHAKE_VERSION


def test_client_type_prefers_client_info_then_process_tree_then_option() -> None:
    """clientInfo.name decides; then the agent found above us; then --client-type."""
    assert handshake.client_type_of("claude-code", "codex", "codex") == "claude-code"
    assert handshake.client_type_of("codex-mcp-client", None, None) == "codex"
    assert handshake.client_type_of("some-ide", "codex", "claude-code") == "codex"
    assert handshake.client_type_of("some-ide", "unknown", "claude-code") == "claude-code"
    assert handshake.client_type_of(None, None, None) == "unknown"


def test_push_only_for_claude_with_channels_unless_forced() -> None:
    """Channels flag + Claude Code -> push; Codex and unknown clients -> inline; forcing wins."""
    assert handshake.delivery_of(None, "claude-code", True) == "push"
    assert handshake.delivery_of(None, "claude-code", False) == "inline"
    assert handshake.delivery_of(None, "codex", True) == "inline"
    assert handshake.delivery_of(None, "unknown", True) == "inline"
    assert handshake.delivery_of("inline", "claude-code", True) == "inline"
    assert handshake.delivery_of("push", "unknown", False) == "push"


def test_instructions_fit_the_delivery() -> None:
    """A pushed-to Claude is told messages arrive by themselves; others to call check_messages."""
    assert 'source="my-peers"' in handshake.instructions_for("push", "my-peers")
    assert "check_messages() at the start of every turn" in handshake.instructions_for("inline", "x")


def test_first_line_is_read_whole_and_the_rest_kept() -> None:
    """The fast path reads exactly one line; what follows goes to the SDK."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b'{"a":1}\n{"b":')
    os.close(write_fd)
    try:
        assert handshake.read_first_line(read_fd) == (b'{"a":1}', b'{"b":')
    finally:
        os.close(read_fd)


def test_first_message_parsing() -> None:
    """An initialize request is recognised with its client name; garbage is left alone."""
    first = handshake.parse_first(json.dumps(initialize_request(client="codex-mcp-client")).encode())
    assert first.is_initialize and first.client_name == "codex-mcp-client"
    assert not handshake.parse_first(b"not json").is_initialize
    assert not handshake.parse_first(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}').is_initialize


def test_the_first_server_discover_is_refused_by_the_fast_path() -> None:
    """The entry point answers a first server/discover with method-not-found itself."""
    request = {"jsonrpc": "2.0", "id": 0, "method": "server/discover",
               "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    first = handshake.parse_first(json.dumps(request).encode())
    assert first.is_discover and not first.is_initialize
    answer = json.loads(handshake.discover_refusal(request))
    assert answer == {"jsonrpc": "2.0", "id": 0, "error": {"code": -32601, "message": handshake.DISCOVER_REFUSAL}}


def test_push_instructions_no_longer_tell_the_model_not_to_check() -> None:
    """A channel may be skipped by Claude Code: push-mode instructions ask for check_messages too."""
    text = handshake.instructions_for("push", "claude-peers")
    assert "check_messages() when you start a task" in text
    assert "arrive by themselves" in text and "usually" in text


def test_malformed_initialize_is_left_to_the_sdk() -> None:
    """No fast answer unless the request is one the SDK would accept; it then answers the error."""
    good = initialize_request()
    assert handshake.parse_first(json.dumps(good).encode()).is_initialize
    bad = [
        {**good, "params": {}},
        {**good, "params": {**good["params"], "clientInfo": {"name": "x"}}},
        {**good, "params": {**good["params"], "protocolVersion": 5}},
        {**good, "id": None},
        {**good, "id": True},
        {key: value for key, value in good.items() if key != "jsonrpc"},
    ]
    for request in bad:
        assert not handshake.parse_first(json.dumps(request).encode()).is_initialize, request
