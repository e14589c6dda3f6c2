"""The MCP tools against a recording fake broker: validation, wording, isError results."""

from __future__ import annotations

from typing import Any

from claudepeers.wire import commands as wire
from hypothesis import given
from hypothesis import strategies as st

from claudepeers.bridge.broker_calls import BrokerTimeout, BrokerUnreachable
from claudepeers.bridge.tool_schemas import _QUICK_CHECKS, _VALIDATORS, TOOLS, validation_error
from claudepeers.bridge.tools import PeerTools

from bridge_support import asyncio_test

PEER = {
    "id": "ab12cd34",
    "name": "api",
    "client_type": "codex",
    "cwd": "/home/u/api",
    "git_root": "/home/u/api",
    "branch": "main",
    "summary": "porting the parser",
    "state": "online",
    "last_seen": "2026-11-24T21:00:00.000Z",
    "unread": 0,
}


class FakeBroker:
    """Answers each command from a table and records the calls."""

    def __init__(self, answers: dict[type, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[type, dict]] = []

    async def call(self, command: type, **arguments: Any) -> dict[str, Any]:
        self.calls.append((command, arguments))
        answer = self.answers[command]
        if isinstance(answer, Exception):
            raise answer
        return answer


def tools_with(answers: dict[type, Any]) -> tuple[PeerTools, FakeBroker]:
    broker = FakeBroker(answers)

    async def check() -> str:
        return "No new messages."

    return PeerTools(broker, check), broker


@asyncio_test
async def test_list_peers_prints_one_block_per_peer() -> None:
    """Each peer gets a block starting with its ID line, then the details an agent needs."""
    tools, broker = tools_with({wire.ListPeers: {"peers": [PEER, {**PEER, "id": "zz", "git_root": None}]}})
    result = await tools.call("list_peers", {"scope": "repo"})
    assert not result.is_error
    assert broker.calls == [(wire.ListPeers, {"scope": "repo"})]
    blocks = result.text.split("\n\n")
    assert blocks[0] == "2 peers (scope: repo):"
    assert blocks[1].split("\n") == [
        "ID: ab12cd34",
        "Name: api",
        "Client: codex",
        "CWD: /home/u/api",
        "Repo: /home/u/api (branch main)",
        "Summary: porting the parser",
        "Last seen: 2026-11-24T21:00:00.000Z (online)",
    ]
    assert "Repo: none" in blocks[2]


@asyncio_test
async def test_list_peers_defaults_to_machine_and_says_when_empty() -> None:
    """No scope means the whole machine; an empty list says so plainly."""
    tools, broker = tools_with({wire.ListPeers: {"peers": []}})
    result = await tools.call("list_peers", {})
    assert broker.calls == [(wire.ListPeers, {"scope": "machine"})]
    assert result.text == "No other peers (scope: machine)."


@asyncio_test
async def test_bad_arguments_are_is_error_texts_without_a_broker_call() -> None:
    """Wrong types, unknown scopes, missing and extra arguments: isError, with the right call."""
    tools, broker = tools_with({})
    cases = [
        ("list_peers", {"scope": "galaxy"}, "'galaxy' is not one of"),
        ("send_message", {"to_id": "api"}, "'message' is a required property"),
        ("send_message", {"to_id": 7, "message": "x"}, "to_id: 7 is not of type 'string'"),
        ("send_message", {"to_id": "", "message": "x"}, "to_id"),
        ("set_summary", {"summary": "x", "extra": 1}, "Additional properties are not allowed"),
        ("kill_peer", {}, "'peer_id' is a required property"),
        ("fly", {}, "Unknown tool 'fly'"),
    ]
    for name, arguments, expected in cases:
        result = await tools.call(name, arguments)
        assert result.is_error, name
        assert expected in result.text, result.text
    assert broker.calls == []
    assert "Call it as send_message(to_id: string, message: string, reply_to: integer (optional))" in validation_error(
        "send_message", {"to_id": 1}
    )


@asyncio_test
async def test_send_message_reports_shown_or_queued() -> None:
    """The result says truthfully whether the recipient has seen it."""
    answer = {"message_id": 7, "status": "shown", "detail": "api has been shown the message",
              "to_id": "ab12cd34", "to_name": "api"}
    tools, broker = tools_with({wire.Send: answer})
    result = await tools.call("send_message", {"to_id": "api", "message": "hello"})
    (command, arguments), = broker.calls
    key = arguments.pop("client_key")
    assert command is wire.Send and arguments == {"to": "api", "body": "hello"}
    assert len(key) == 32  # a fresh key per call makes a repeat after a lost connection safe
    assert result.text == "Message #7 shown to api (ab12cd34): api has been shown the message."
    tools, _ = tools_with({wire.Send: {**answer, "status": "queued", "detail": "api sees it with its next tool call"}})
    result = await tools.call("send_message", {"to_id": "api", "message": "hello"})
    assert result.text == "Message #7 queued for api (ab12cd34): api sees it with its next tool call."


@asyncio_test
async def test_broker_errors_become_advice() -> None:
    """Unknown, ambiguous and gone peers, refused kills: the broker's words plus what to do."""
    cases = [
        (wire.Send, wire.UnknownPeer("no peer 'apx'; peers: api (ab12cd34)"), "send_message",
         {"to_id": "apx", "message": "x"}, "Call list_peers"),
        (wire.Send, wire.AmbiguousPeer("'a' matches api, app"), "send_message",
         {"to_id": "a", "message": "x"}, "Use the peer's ID"),
        (wire.KillPeer, wire.KillRefused("you cannot kill yourself"), "kill_peer",
         {"peer_id": "me"}, "kill_peer failed: you cannot kill yourself"),
    ]
    for command, error, name, arguments, expected in cases:
        tools, _ = tools_with({command: error})
        result = await tools.call(name, arguments)
        assert result.is_error and expected in result.text, result.text
        assert str(error) in result.text


@asyncio_test
async def test_unreachable_broker_is_an_is_error_text() -> None:
    """A tool call while the broker is gone says so and what to do."""
    tools, _ = tools_with({wire.Whoami: BrokerUnreachable("no broker answers at /x.sock")})
    result = await tools.call("whoami", {})
    assert result.is_error
    assert "not reachable (no broker answers at /x.sock)" in result.text
    assert "claude-peers status" in result.text


@asyncio_test
async def test_a_timed_out_send_says_so_and_its_retry_reuses_the_key() -> None:
    """A send the broker did not answer in time is an isError naming the deadline; sending
    the same message again reuses its client key (stored once), another message does not."""
    tools, broker = tools_with({wire.Send: BrokerTimeout(5.0)})
    result = await tools.call("send_message", {"to_id": "bob", "message": "hi"})
    assert result.is_error
    assert "did not answer (it did not answer within 5 s)" in result.text
    assert "calling send_message again with the same to_id and message is safe" in result.text
    broker.answers[wire.Send] = {"message_id": 7, "status": "queued", "detail": "", "to_id": "x", "to_name": "bob"}
    assert not (await tools.call("send_message", {"to_id": "bob", "message": "hi"})).is_error
    assert not (await tools.call("send_message", {"to_id": "bob", "message": "hi"})).is_error
    assert not (await tools.call("send_message", {"to_id": "bob", "message": "other"})).is_error
    keys = [arguments["client_key"] for _command, arguments in broker.calls]
    assert keys[0] == keys[1] and len(set(keys)) == 3


@asyncio_test
async def test_a_send_larger_than_the_wire_carries_names_the_limit() -> None:
    """Over 8 MiB: an isError naming both limits, and nothing is sent to the broker."""
    tools, broker = tools_with({})
    result = await tools.call("send_message", {"to_id": "bob", "message": "x" * (8 * 1024 * 1024 + 1)})
    assert result.is_error and "8,388,609 bytes" in result.text
    assert "at most 8,388,608 bytes (8 MiB)" in result.text and "CLAUDE_PEERS_MAX_BODY_BYTES" in result.text
    assert broker.calls == []


@asyncio_test
async def test_set_summary_set_name_kill_and_whoami() -> None:
    """The smaller tools call the right command and answer in one line or one block."""
    tools, broker = tools_with({
        wire.SetSummary: {},
        wire.SetName: {"name": "parser"},
        wire.KillPeer: {"outcome": "terminated", "peer_id": "ab12cd34", "detail": "SIGTERM; exited"},
        wire.Whoami: {"peer": PEER},
    })
    assert (await tools.call("set_summary", {"summary": "porting"})).text == "Summary set: porting"
    assert (await tools.call("set_name", {"name": "parser"})).text == "Your peer name is now parser."
    assert (await tools.call("kill_peer", {"peer_id": "api"})).text == "kill_peer ab12cd34: terminated. SIGTERM; exited"
    assert (await tools.call("whoami", {})).text.startswith("You are:\n\nID: ab12cd34")
    assert [command for command, _ in broker.calls] == [wire.SetSummary, wire.SetName, wire.KillPeer, wire.Whoami]


def test_tool_names_are_the_seeds() -> None:
    """The seed's five tools are there with their argument names, plus whoami, set_name and the
    coordination tools (groups, claims) and the thread tools (send_message's reply_to among them)."""
    props = {name: set(tool["inputSchema"]["properties"]) for name, tool in TOOLS.items()}
    assert props == {
        "list_peers": {"scope"},
        "send_message": {"to_id", "message", "reply_to"},
        "set_summary": {"summary"},
        "check_messages": set(),
        "kill_peer": {"peer_id"},
        "whoami": set(),
        "set_name": {"name"},
        "wait_for_reply": {"message_id", "timeout_seconds"},
        "read_thread": {"thread_id", "before"},
        "search_messages": {"text"},
        "join_group": {"name"},
        "leave_group": {"name"},
        "list_groups": set(),
        "claim_paths": {"paths", "reason", "ttl_seconds"},
        "release_paths": {"paths", "all"},
    }


@given(
    st.sampled_from(sorted(TOOLS)),
    st.dictionaries(
        st.sampled_from(["scope", "to_id", "message", "summary", "peer_id", "name", "extra"]),
        st.one_of(st.text(max_size=5), st.sampled_from(["machine", "repo", "directory", ""]),
                  st.integers(), st.none(), st.lists(st.integers(), max_size=2)),
        max_size=3,
    ),
)
def test_quick_check_never_accepts_what_jsonschema_rejects(name: str, arguments: dict) -> None:
    """The fast path agrees with jsonschema whenever it says "valid"."""
    if _QUICK_CHECKS[name](arguments):
        assert not list(_VALIDATORS[name].iter_errors(arguments))
    assert (validation_error(name, arguments) is None) == (not list(_VALIDATORS[name].iter_errors(arguments)))
