"""Fuzzing every input surface of real processes (issue 6): MCP and stdin here, AMP in ``test_fuzz.py``.

MCP tool calls with arguments generated from the tool schemas (and deliberately off them),
against a real bridge under a stand-in agent, and malformed JSON-RPC lines on a real
bridge's stdin. After each batch both bridges and the broker must still be served.

Case counts: ``CP_FUZZ_EXAMPLES`` (default 120 per surface; the slow suite uses 10x).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claudepeers.bridge.tool_schemas import TOOLS

from bridge_support import FakeAgent
from conftest import BrokerProcess, broker_env
from raw_mcp import StdioBridge
from fuzz_support import COUNTS, FUZZ_SETTINGS, LONG_SETTINGS, counted


# --- MCP: tool calls and JSON-RPC lines on a real bridge ---------------------------------------


@dataclass
class BridgePair:
    """Two real bridges under stand-in agents: ``fuzzed`` takes the fuzz, ``healthy`` checks on it."""

    broker: BrokerProcess
    agents: list[FakeAgent]
    fuzzed: StdioBridge
    healthy: StdioBridge
    base: Path

    def check_healthy(self) -> None:
        """Both bridges and the broker answer; a message from the fuzzed one reaches the healthy one."""
        assert self.broker.process is not None and self.broker.process.poll() is None
        assert not self.fuzzed.closed.is_set(), "the fuzzed bridge exited"
        assert "healthy" in self.fuzzed.text("list_peers", {"scope": "machine"})
        self.fuzzed.text("send_message", {"to_id": "healthy", "message": "ping from the fuzzed bridge"})
        notification = self.healthy.channel.get(timeout=10)
        assert "ping from the fuzzed bridge" in notification["params"]["content"]


def start_bridge(agent: FakeAgent, base: Path, name: str) -> StdioBridge:
    """A bridge under ``agent`` with its handshake done and registered."""
    bridge = StdioBridge(agent.socket_path, base / f"{name}.pid", {**agent.env}, agent.cwd,
                         transcript=agent.transcript if agent.channels else None)
    bridge.initialize()
    bridge.text("whoami")
    agent.bridge_pids.append(bridge.bridge_pid())
    return bridge


@pytest.fixture(scope="module")
def bridges() -> Iterator[BridgePair]:
    """A broker and two real bridges, shared by the MCP fuzz tests."""
    base = Path(tempfile.mkdtemp(prefix="cp-fm-", dir="/tmp"))
    broker = BrokerProcess(base, broker_env(base)).start()
    agents: list[FakeAgent] = []
    started: list[StdioBridge] = []
    try:
        for name in ("fuzzed", "healthy"):
            agents.append(FakeAgent(base, name, "claude", base, dict(broker.env), channels=True).start())
            started.append(start_bridge(agents[-1], base, name))
        pair = BridgePair(broker, agents, started[0], started[1], base)
        pair.check_healthy()
        yield pair
        pair.check_healthy()
    finally:
        for bridge in started:
            bridge.close()
        for agent in agents:
            agent.cleanup()
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy:
    """Arguments for a tool: valid by its schema, or off it in one way or another."""
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))

    def value_for(spec: dict[str, Any]) -> st.SearchStrategy:
        if "enum" in spec:
            return st.sampled_from(spec["enum"])
        return st.text(min_size=spec.get("minLength", 0), max_size=300)

    valid = st.fixed_dictionaries({k: value_for(v) for k, v in properties.items() if k in required},
                                  optional={k: value_for(v) for k, v in properties.items() if k not in required})
    wrong_types = st.dictionaries(st.sampled_from(sorted(properties) or ["x"]), json_values, max_size=3)
    extra = st.dictionaries(st.text(max_size=10), json_values, max_size=3)
    return st.one_of(valid, wrong_types, extra, json_values)


# kill_peer is fuzzed with targets that can only name no one: stand-in agents are real processes.
tool_calls = st.one_of(
    *[st.tuples(st.just(name), from_schema(tool["inputSchema"])) for name, tool in TOOLS.items() if name != "kill_peer"],
    st.tuples(st.just("kill_peer"), st.fixed_dictionaries({"peer_id": st.text(alphabet="!@#$%^&*()", max_size=20)})),
    st.tuples(st.text(max_size=20), json_values),
)


@FUZZ_SETTINGS
@given(call=tool_calls)
def test_mcp_tool_calls_with_random_arguments_get_results_not_crashes(bridges: BridgePair, call: tuple[str, Any]) -> None:
    """Every tools/call, valid or not, gets a JSON-RPC answer: a result (an isError one for bad input)
    or a JSON-RPC error; the bridge keeps running."""
    counted("mcp-tool-calls")
    name, arguments = call
    answer = bridges.fuzzed.call(name, arguments)
    assert ("result" in answer) != ("error" in answer), answer
    if "result" in answer:
        result = answer["result"]
        assert isinstance(result.get("content"), list)
        if name in TOOLS and arguments is not None and not isinstance(arguments, dict):
            assert result.get("isError") or answer.get("error"), answer


def test_mcp_tool_call_batch_leaves_both_bridges_served(bridges: BridgePair) -> None:
    """After the tool-call batch, list and send still work between the two bridges."""
    bridges.check_healthy()


lines = st.one_of(
    st.binary(max_size=500).map(lambda b: b.replace(b"\n", b" ")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"jsonrpc": st.sampled_from(["2.0", "1.0", None, 2]),
                           "id": st.one_of(st.none(), st.integers(-5, 10**20), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
                           "method": st.one_of(st.sampled_from(["tools/call", "tools/list", "initialize", "ping",
                                                                 "notifications/cancelled", "resources/list", "x"]),
                                               st.text(max_size=20), st.integers()),
                           "params": json_values}).map(lambda m: json.dumps(m).encode()),
    st.just(b"{" * 5000),
    st.just(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}'),
)


@FUZZ_SETTINGS
@given(line=lines)
def test_malformed_json_rpc_lines_do_not_stop_the_bridge(bridges: BridgePair, line: bytes) -> None:
    """Any line on stdin (noise, wrong JSON-RPC, deep nesting) leaves the bridge answering requests."""
    counted("mcp-stdin-lines")
    bridges.fuzzed.send_line(line + b"\n")
    assert "ID: " in bridges.fuzzed.text("whoami")


def test_stdin_batch_leaves_both_bridges_served(bridges: BridgePair) -> None:
    """After the stdin batch, list and send still work between the two bridges."""
    bridges.check_healthy()
    print("FUZZ-COUNTS " + json.dumps(COUNTS, sort_keys=True))


# --- the long passes (slow suite): ten times the cases -----------------------------------------


@pytest.mark.slow
@LONG_SETTINGS
@given(call=tool_calls)
def test_long_mcp_tool_calls(bridges: BridgePair, call: tuple[str, Any]) -> None:
    """Ten times the random tool calls (slow suite)."""
    test_mcp_tool_calls_with_random_arguments_get_results_not_crashes.hypothesis.inner_test(bridges, call)  # type: ignore[attr-defined]


@pytest.mark.slow
@LONG_SETTINGS
@given(line=lines)
def test_long_json_rpc_lines(bridges: BridgePair, line: bytes) -> None:
    """Ten times the malformed stdin lines (slow suite)."""
    test_malformed_json_rpc_lines_do_not_stop_the_bridge.hypothesis.inner_test(bridges, line)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_long_mcp_batches_leave_both_bridges_served(bridges: BridgePair) -> None:
    """After the long MCP batches, both bridges are still served (slow suite)."""
    bridges.check_healthy()
    print("FUZZ-COUNTS " + json.dumps(COUNTS, sort_keys=True))
