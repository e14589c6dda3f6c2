"""The bridge's half of the permission relay, without processes: parsing, tying a request to its
tool call in the transcript, ending it, answering it; and the capability in both handshakes."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed

from claudepeers.bridge import handshake
from claudepeers.bridge.permissions import PermissionRelay, ToolCalls, answer_line, parse_request
from claudepeers.wire import commands as wire

from bridge_support import asyncio_test
from test_bridge_handshake import initialize_request, sdk_answer


class Writer:
    """A LineWriter that records lines."""

    broken = False

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> bool:
        """Record; True: in the pipe."""
        self.lines.append(data)
        return True


class Broker:
    """The link's call(), recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, command: type, **arguments: Any) -> Deferred:
        """Record the command and its arguments; answer at once."""
        self.calls.append((command.__name__, arguments))
        return succeed({})


def line(entry: dict[str, Any]) -> bytes:
    """One transcript line."""
    return json.dumps(entry).encode()


def tool_use(call_id: str, name: str, arguments: dict[str, Any]) -> bytes:
    """The assistant's line that starts a tool call."""
    return line({"type": "assistant", "message": {"role": "assistant", "content": [
        {"type": "tool_use", "id": call_id, "name": name, "input": arguments}]}})


def tool_result(call_id: str) -> bytes:
    """The line that ends it."""
    return line({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call_id, "content": "ok"}]}})


REQUEST = {"request_id": "fbenr", "tool_name": "Bash", "description": "Create the marker file",
           "input_preview": '{ "command": "touch /tmp/b", "description": "Create the marker file" }'}


def test_a_request_is_parsed_and_cut_and_a_malformed_one_refused() -> None:
    """The four fields, texts cut to the broker's bound; without an id or tool: None."""
    parsed = parse_request({**REQUEST, "description": "x" * 5000, "tool_kind": "bash"})
    assert parsed is not None and len(parsed["description"]) == 4000 and parsed["request_id"] == "fbenr"
    assert parse_request({"request_id": "x"}) is None
    assert parse_request({"request_id": 5, "tool_name": "Bash"}) is None


def test_the_answer_line_is_claude_codes_notification() -> None:
    """notifications/claude/channel/permission with request_id and behavior."""
    sent = json.loads(answer_line("fbenr", "deny"))
    assert sent == {"jsonrpc": "2.0", "method": "notifications/claude/channel/permission",
                    "params": {"request_id": "fbenr", "behavior": "deny"}}


def test_tool_calls_are_followed_and_matched_by_their_input() -> None:
    """Open calls come and go; the preview picks the call whose input it shows."""
    calls = ToolCalls()
    assert calls.feed(tool_use("t1", "Bash", {"command": "touch /tmp/a"})) == []
    calls.feed(tool_use("t2", "Bash", {"command": "touch /tmp/b"}))
    calls.feed(tool_use("t3", "Write", {"file_path": "/tmp/b"}))
    assert calls.match("Bash", REQUEST["input_preview"]) == {"t2"}
    assert calls.match("Bash", "nothing shown") == {"t1", "t2"}
    assert calls.match("Edit", "x") == set()
    assert calls.feed(tool_result("t2")) == ["t2"]
    assert calls.feed(b'{"type":"user", "not json') == [] and set(calls.open) == {"t1", "t3"}


def test_a_request_is_relayed_and_ends_when_its_tool_call_ends() -> None:
    """Relayed at once; the transcript's result for its call ends it (the terminal answered)."""
    broker, writer = Broker(), Writer()
    relay = PermissionRelay(broker.call, writer)
    relay.transcript_line(tool_use("t1", "Bash", {"command": "touch /tmp/a"}))
    relay.transcript_line(tool_use("t2", "Bash", {"command": "touch /tmp/b"}))
    relay.requested(REQUEST)
    assert broker.calls == [("PermissionRequest", {"request_id": "fbenr", "tool_name": "Bash",
                                                   "description": "Create the marker file",
                                                   "input_preview": REQUEST["input_preview"]})]
    relay.transcript_line(tool_result("t1"))
    assert len(broker.calls) == 1
    relay.transcript_line(tool_result("t2"))
    assert broker.calls[-1][0] == "PermissionEnded" and broker.calls[-1][1]["request_id"] == "fbenr"
    assert relay.pending == {} and writer.lines == []


def test_a_tool_use_written_after_the_request_is_tied_to_it() -> None:
    """Claude Code writes its transcript in batches: the call may show up after the request."""
    broker = Broker()
    relay = PermissionRelay(broker.call, Writer())
    relay.requested(REQUEST)
    relay.transcript_line(tool_use("t9", "Bash", {"command": "touch /tmp/b"}))
    relay.transcript_line(tool_result("t9"))
    assert [name for name, _ in broker.calls] == ["PermissionRequest", "PermissionEnded"]


def test_the_persons_answer_is_written_and_pending_requests_are_relayed_again_after_a_reconnect() -> None:
    """answer() writes the notification; registered() sends what is still pending once more."""
    broker, writer = Broker(), Writer()
    relay = PermissionRelay(broker.call, writer)
    relay.requested(REQUEST)
    relay.requested({**REQUEST, "request_id": "sajdx"})
    assert relay.answer("FBENR", "allow")
    assert writer.lines == [answer_line("FBENR", "allow")]
    relay.registered()
    assert [arguments["request_id"] for _, arguments in broker.calls] == ["fbenr", "sajdx", "sajdx"]


def test_a_bad_behavior_from_the_broker_is_refused() -> None:
    """Only allow and deny reach Claude Code."""
    relay = PermissionRelay(Broker().call, Writer())
    try:
        relay.answer("fbenr", "maybe")
    except wire.InvalidArgument as error:
        assert "allow or deny" in str(error)
    else:
        raise AssertionError("accepted a bad behavior")


@asyncio_test
async def test_with_the_relay_the_fast_answer_still_equals_the_sdk_answer() -> None:
    """Declaring claude/channel/permission: the fast path and the SDK say the same."""
    from claudepeers.bridge.server import build_server
    from claudepeers.bridge.broker_calls import ToolResult

    request = initialize_request("2025-11-25")
    instructions = handshake.instructions_for("push", "claude-peers")
    fast = json.loads(handshake.initialize_answer(request, instructions, permissions=True))
    assert fast["result"]["capabilities"]["experimental"] == {"claude/channel": {}, "claude/channel/permission": {}}

    async def no_tool(name: str, arguments: object) -> ToolResult:
        return ToolResult("")

    server, options = build_server(instructions, no_tool, lambda version: None, permissions=True)
    assert options.capabilities.experimental == fast["result"]["capabilities"]["experimental"]
    plain = json.loads(handshake.initialize_answer(request, instructions))
    assert plain == await sdk_answer(request, instructions)


def test_the_relay_is_offered_only_as_a_channel_unless_turned_off() -> None:
    """push delivery offers it; inline never; CLAUDE_PEERS_RELAY_PERMISSIONS=0 turns it off."""
    assert handshake.relays_permissions("push", {})
    assert not handshake.relays_permissions("inline", {})
    assert not handshake.relays_permissions("push", {"CLAUDE_PEERS_RELAY_PERMISSIONS": "0"})
