"""Tool approvals in the broker: the registry, the operator check, and the AMP commands (in process).

The registry is driven with a Clock, a store that records events and fake bridge connections;
the AMP tests run a real Broker over SQLite through iosim (as test_protocol.py does), with a
bridge client that answers PermissionAnswer.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.protocols import amp

from claudepeers.broker import operator
from claudepeers.broker.approvals import (
    ANSWER_TIMEOUT_SECONDS, MAX_PENDING_PER_PEER, MAX_STORED_REFUSALS_PER_MINUTE, Approvals,
)
from claudepeers.broker.core import Credentials
from claudepeers.common.errors import (
    AmbiguousPeer, BrokerUnavailable, InvalidArgument, LimitExceeded, PermissionDenied, UnknownApproval,
)
from claudepeers.wire import commands as wire

from broker_fakes import World
from broker_pair import Pair

OURSELVES_REFUSED = operator.refusal("unix", os.getpid())
UNDER_AN_AGENT = pytest.mark.skipif(
    OURSELVES_REFUSED is not None,
    reason=f"the test runner itself may not answer approvals ({OURSELVES_REFUSED}); run pytest from a terminal")


class RecordingStore:
    """The store's add_event, recorded."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str | None, str]] = []

    def add_event(self, at: float, kind: str, peer_id: str | None, detail: str) -> Deferred:
        """Record one stored event."""
        self.events.append((at, kind, peer_id, detail))
        return succeed(None)


class FakeBridgeConnection:
    """A bridge connection: records the answers handed to it; answers at once, fails, or never."""

    def __init__(self, outcome: str = "written") -> None:
        self.outcome = outcome
        self.answers: list[tuple[str, str]] = []
        self.closed = False

    def permission_answer(self, request_id: str, behavior: str) -> Deferred:
        """Record the answer; fire per ``outcome``."""
        self.answers.append((request_id, behavior))
        if self.outcome == "written":
            return succeed(True)
        if self.outcome == "never":
            return Deferred()
        return fail(ConnectionError("connection lost"))


@pytest.fixture
def registry() -> tuple[Approvals, Clock, RecordingStore, list]:
    """An Approvals registry with a clock, a recording store and the events it emitted."""
    clock = Clock()
    clock.advance(1_800_000_000)
    store = RecordingStore()
    emitted: list[tuple[str, str | None, str]] = []
    names = {"p1": "api", "p2": "web"}
    approvals = Approvals(clock, store, lambda kind, peer, detail, **extra: emitted.append((kind, peer, detail)),
                          lambda peer_id: names.get(peer_id, peer_id))
    return approvals, clock, store, emitted


def test_a_request_is_listed_with_its_peer_tool_and_age(registry: Any) -> None:
    """Asked, then listed oldest first with what the person needs to decide."""
    approvals, clock, _, emitted = registry
    approvals.ask("p1", FakeBridgeConnection(), "fbenr", "Bash", "Create the marker file", '{"command":"touch x"}')
    clock.advance(7)
    approvals.ask("p2", FakeBridgeConnection(), "sajdx", "Write", "", '{"file_path":"/a"}')
    listed = approvals.pending()
    assert [a["request"] for a in listed] == ["fbenr", "sajdx"]
    first = listed[0]
    assert (first["peer_name"], first["tool_name"], first["description"]) == ("api", "Bash", "Create the marker file")
    assert first["age_seconds"] == 7 and first["input_preview"] == '{"command":"touch x"}'
    assert emitted[0][0] == "permission" and "api asks to use Bash" in emitted[0][2]


def test_the_same_id_from_two_peers_is_named_with_its_peer(registry: Any) -> None:
    """Two sessions may draw the same five letters: each is then typed as peer:id."""
    approvals, _, _, _ = registry
    approvals.ask("p1", FakeBridgeConnection(), "abcde", "Bash", "one", "")
    approvals.ask("p2", FakeBridgeConnection(), "abcde", "Bash", "two", "")
    assert [a["request"] for a in approvals.pending()] == ["p1:abcde", "p2:abcde"]
    with pytest.raises(AmbiguousPeer, match="p1:abcde"):
        approvals.find("abcde")
    assert approvals.find("web:abcde").peer_id == "p2"
    assert approvals.find("p1:ABCDE").description == "one"


def test_asking_again_replaces_and_bad_requests_are_refused(registry: Any) -> None:
    """One entry per id; ids, tool names and sizes are checked; a peer holds a bounded number."""
    approvals, _, _, _ = registry
    bridge = FakeBridgeConnection()
    approvals.ask("p1", bridge, "abcde", "Bash", "first", "")
    approvals.ask("p1", bridge, "abcde", "Bash", "second", "")
    assert [a["description"] for a in approvals.pending()] == ["second"]
    with pytest.raises(InvalidArgument, match="request id"):
        approvals.ask("p1", bridge, "no spaces", "Bash", "", "")
    with pytest.raises(InvalidArgument, match="tool_name"):
        approvals.ask("p1", bridge, "fghij", "", "", "")
    with pytest.raises(LimitExceeded, match="description"):
        approvals.ask("p1", bridge, "fghij", "Bash", "x" * 5000, "")
    for number in range(MAX_PENDING_PER_PEER - 1):
        approvals.ask("p1", bridge, f"r{number}", "Bash", "", "")
    with pytest.raises(LimitExceeded, match="pending approvals"):
        approvals.ask("p1", bridge, "onemore", "Bash", "", "")


def test_a_request_ends_when_the_bridge_says_so_or_disconnects(registry: Any) -> None:
    """Answered in the terminal (the bridge saw the tool call end), or the bridge left: gone."""
    approvals, _, _, _ = registry
    one, two = FakeBridgeConnection(), FakeBridgeConnection()
    approvals.ask("p1", one, "aaaaa", "Bash", "", "")
    approvals.ask("p1", one, "bbbbb", "Bash", "", "")
    approvals.ask("p2", two, "ccccc", "Bash", "", "")
    assert approvals.ended("p1", "AAAAA", "answered in the terminal")
    assert not approvals.ended("p1", "aaaaa", "again")
    assert not approvals.ended("p2", "bbbbb", "another peer's id")
    assert approvals.connection_closed(one) == 1
    assert [a["request"] for a in approvals.pending()] == ["ccccc"]


@pytest_twisted.inlineCallbacks
def test_an_answer_goes_to_the_bridge_that_asked_and_is_recorded(registry: Any) -> None:
    """allow reaches the asking bridge, the request leaves the list, the store has the audit."""
    approvals, _, store, emitted = registry
    bridge = FakeBridgeConnection()
    approvals.ask("p1", bridge, "fbenr", "Bash", "Create the marker file", "")
    shown, detail = yield approvals.answer("fbenr", "allow", "the operator, pid 42 (bash),")
    assert bridge.answers == [("fbenr", "allow")]
    assert shown["tool_name"] == "Bash" and detail.startswith("Allowed Bash for api (p1), request fbenr")
    assert approvals.pending() == []
    assert store.events[-1][1:3] == ("approval", "p1")
    assert "the operator, pid 42 (bash), allowed Bash for api" in store.events[-1][3]
    assert emitted[-1][0] == "approval"
    with pytest.raises(UnknownApproval, match="no pending approval is 'fbenr'"):
        yield approvals.answer("fbenr", "deny", "the operator")


@pytest_twisted.inlineCallbacks
def test_an_answer_the_bridge_cannot_take_comes_back(registry: Any) -> None:
    """The bridge failed (or never answered): the request is still pending, and that is recorded."""
    approvals, clock, store, _ = registry
    failing, silent = FakeBridgeConnection("fail"), FakeBridgeConnection("never")
    approvals.ask("p1", failing, "aaaaa", "Bash", "", "")
    approvals.ask("p2", silent, "bbbbb", "Bash", "", "")
    with pytest.raises(BrokerUnavailable, match="did not take the answer"):
        yield approvals.answer("aaaaa", "deny", "the operator")
    pending = approvals.answer("bbbbb", "allow", "the operator")
    outcome: list = []
    pending.addBoth(outcome.append)
    clock.advance(ANSWER_TIMEOUT_SECONDS + 0.1)
    assert outcome and outcome[0].check(BrokerUnavailable)
    assert sorted(a["request"] for a in approvals.pending()) == ["aaaaa", "bbbbb"]
    assert all("could not" in event[3] for event in store.events)


@pytest_twisted.inlineCallbacks
def test_observers_hear_every_change(registry: Any) -> None:
    """The dashboard's subscription: asked, answered, ended; unsubscribing stops it."""
    approvals, _, _, _ = registry
    heard: list[tuple[str, str]] = []
    stop = approvals.subscribe(lambda change, approval: heard.append((change, approval["request"])))
    bridge = FakeBridgeConnection()
    approvals.ask("p1", bridge, "aaaaa", "Bash", "", "")
    approvals.ask("p1", bridge, "bbbbb", "Bash", "", "")
    yield approvals.answer("aaaaa", "deny", "the operator")
    approvals.ended("p1", "bbbbb", "terminal")
    stop()
    approvals.ask("p1", bridge, "ccccc", "Bash", "", "")
    assert heard == [("asked", "aaaaa"), ("asked", "bbbbb"), ("answered", "aaaaa"), ("ended", "bbbbb")]


@pytest_twisted.inlineCallbacks
def test_refusals_are_recorded_but_a_loop_of_them_does_not_fill_the_store(registry: Any) -> None:
    """Each refusal is stored, up to a bound per minute; the ones past it are counted."""
    approvals, clock, store, _ = registry
    for _ in range(MAX_STORED_REFUSALS_PER_MINUTE + 5):
        yield approvals.refused("fbenr", "allow", "an agent asked")
    assert len(store.events) == MAX_STORED_REFUSALS_PER_MINUTE
    clock.advance(61)
    yield approvals.refused("fbenr", "allow", "an agent asked")
    assert store.events[-1][3] == "refused to allow 'fbenr': an agent asked (5 more refusals since the last one stored)"


# --- who may answer ---------------------------------------------------------------------------


class FakeTable:
    """A process table: pid -> (ppid, start, name, kind, environ)."""

    def __init__(self, **processes: tuple[int, float, str, str | None, dict]) -> None:
        self.processes = {int(pid[1:]): entry for pid, entry in processes.items()}

    def chain(self, pid: int) -> list[dict]:
        """``pid`` and its ancestors, nearest first."""
        found = []
        while pid in self.processes:
            ppid, start, name, kind, environ = self.processes[pid]
            found.append({"pid": pid, "ppid": ppid, "start": start, "name": name, "kind": kind, "environ": environ})
            pid = ppid
        return found


TERMINAL = dict(p10=(1, 1.0, "tmux: server", None, {}), p20=(10, 2.0, "bash", None, {}))


def test_the_persons_terminal_may_answer() -> None:
    """claude-peers < bash < tmux: nothing says agent."""
    table = FakeTable(**TERMINAL, p30=(20, 3.0, "claude-peers", None, {}))
    assert operator.refusal("unix", 30, [], table) is None
    assert operator.describe(30, table) == "pid 30 (claude-peers < bash < tmux: server)"


def test_an_agent_among_the_ancestors_is_refused() -> None:
    """Claude Code's shell tool runs claude-peers: refused, naming the agent."""
    table = FakeTable(**TERMINAL, p25=(20, 2.5, "claude", "claude-code", {}), p26=(25, 2.6, "bash", None, {}),
                      p30=(26, 3.0, "claude-peers", None, {}))
    why = operator.refusal("unix", 30, [], table)
    assert why is not None and "claude (pid 25) is an agent (Claude Code)" in why


def test_a_registered_peers_agent_process_is_refused_whatever_its_name() -> None:
    """A wrapper or stand-in the broker knows as a peer's agent counts as an agent."""
    table = FakeTable(**TERMINAL, p25=(20, 2.5, "node", None, {}), p30=(25, 3.0, "claude-peers", None, {}))
    why = operator.refusal("unix", 30, [(25, 2.5, "worker")], table)
    assert why is not None and "agent process of peer worker" in why
    assert operator.refusal("unix", 30, [(25, 9.0, "worker")], table) is None  # another process, same pid


def test_an_agents_environment_or_a_detached_process_is_refused() -> None:
    """CLAUDECODE=1 (set by Claude Code for its commands) or re-parented to init: refused."""
    marked = FakeTable(**TERMINAL, p30=(20, 3.0, "claude-peers", None, {"CLAUDECODE": "1"}))
    assert "CLAUDECODE is set" in (operator.refusal("unix", 30, [], marked) or "")
    codex = FakeTable(**TERMINAL, p30=(20, 3.0, "claude-peers", None, {"CODEX_THREAD_ID": "t1"}))
    assert "Codex" in (operator.refusal("unix", 30, [], codex) or "")
    detached = FakeTable(p30=(1, 3.0, "claude-peers", None, {}))
    assert "detached" in (operator.refusal("unix", 30, [], detached) or "")


def test_tcp_and_unknown_processes_are_refused() -> None:
    """Nobody vouches for a TCP client, or for a pid the kernel did not give."""
    assert "TCP" in (operator.refusal("tcp", None) or "")
    assert "did not say" in (operator.refusal("unix", None) or "")
    assert "could not be looked at" in (operator.refusal("unix", 99, [], FakeTable()) or "")


def test_require_operator_raises_permission_denied_naming_the_action() -> None:
    """What the responders (and the dashboard) call."""

    class Broker:
        actors: dict = {}

    with pytest.raises(PermissionDenied, match="refusing to open the dashboard: over TCP"):
        operator.require_operator(Broker(), Credentials("tcp"), "open the dashboard")


# --- over AMP, with a real broker -------------------------------------------------------------


class BridgeSide(amp.CommandLocator):
    """The bridge's end: records the answers the broker hands it."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str]] = []

    @wire.PermissionAnswer.responder
    def permission_answer(self, request_id: str, behavior: str) -> dict:
        self.answers.append((request_id, behavior))
        return {"written": True}

    @wire.Deliver.responder
    def deliver(self, messages: list) -> dict:
        return {"shown": [True] * len(messages)}


@pytest_twisted.inlineCallbacks
def bridge_pair(world: World, name: str = "api") -> Any:
    """A registered bridge connection (push delivery) and its recording side."""
    side = BridgeSide()
    agent, bridge = world.agent()
    pair = Pair(world, Credentials("unix", pid=bridge, uid=0), locator=side)
    yield pair.call(wire.Register, agent_pid=agent, agent_start=100.0, client_type="claude-code",
                    cwd="/src/api", delivery="channel (confirmed)", name=name)
    return pair, side


@UNDER_AN_AGENT
@pytest_twisted.inlineCallbacks
def test_over_amp_a_relayed_request_is_answered_by_the_person(world: World) -> None:
    """PermissionRequest from the bridge, ListApprovals and AnswerApproval from the person's
    terminal (this test process), PermissionAnswer back to the bridge; the audit is stored."""
    pair, side = yield bridge_pair(world)
    yield pair.call(wire.PermissionRequest, request_id="fbenr", tool_name="Bash",
                    description="Create the marker file", input_preview='{"command":"touch x"}')
    person = Pair(world, Credentials("unix", pid=os.getpid(), uid=0))
    listed = (yield person.call(wire.ListApprovals))["approvals"]
    assert [(a["request"], a["peer_name"], a["tool_name"]) for a in listed] == [("fbenr", "api", "Bash")]
    answer = yield person.call(wire.AnswerApproval, request="fbenr", behavior="deny")
    assert side.answers == [("fbenr", "deny")] and answer["detail"].startswith("Denied Bash for api")
    assert (yield person.call(wire.ListApprovals))["approvals"] == []
    stored = yield world.store.recent_events(10)
    audit = [event for event in stored if event["kind"] == "approval"]
    assert len(audit) == 1 and f"pid {os.getpid()}" in audit[0]["detail"] and "denied Bash" in audit[0]["detail"]


@pytest_twisted.inlineCallbacks
def test_over_amp_tcp_may_not_answer_and_the_refusal_is_recorded(world: World) -> None:
    """A TCP connection is refused (PERMISSION_DENIED); the request stays; the refusal is in the log."""
    pair, side = yield bridge_pair(world)
    yield pair.call(wire.PermissionRequest, request_id="fbenr", tool_name="Bash", description="", input_preview="")
    tcp = Pair(world, Credentials("tcp"), token="t")
    yield tcp.call(wire.Authenticate, token="t")
    error = yield tcp.error(tcp.client.callRemote(wire.AnswerApproval, request="fbenr", behavior="allow"))
    assert isinstance(error, wire.PermissionDenied) and "over TCP" in str(error)
    assert side.answers == [] and len(world.broker.approvals.pending()) == 1
    stored = yield world.store.recent_events(10)
    assert any(e["kind"] == "approval" and "refused to allow 'fbenr'" in e["detail"] for e in stored)


@pytest_twisted.inlineCallbacks
def test_over_amp_only_the_bridge_relays_and_its_requests_end_with_it(world: World) -> None:
    """A hook's (or the CLI's) connection may not relay; PermissionEnded and the bridge's
    disconnection end requests."""
    pair, _ = yield bridge_pair(world)
    cli = Pair(world, Credentials("unix", pid=os.getpid(), uid=0))
    error = yield cli.error(cli.client.callRemote(wire.PermissionRequest, request_id="aaaaa", tool_name="Bash",
                                                  description="", input_preview=""))
    assert isinstance(error, wire.NotRegistered)
    for request_id in ("aaaaa", "bbbbb"):
        yield pair.call(wire.PermissionRequest, request_id=request_id, tool_name="Bash", description="",
                        input_preview="")
    assert (yield pair.call(wire.PermissionEnded, request_id="aaaaa", reason="answered in the terminal"))["ended"]
    assert [a["request"] for a in (yield cli.call(wire.ListApprovals))["approvals"]] == ["bbbbb"]
    pair.client.transport.loseConnection()
    pair.pump.flush()
    assert (yield cli.call(wire.ListApprovals))["approvals"] == []


@pytest_twisted.inlineCallbacks
def test_over_amp_a_bad_behavior_or_unknown_request_is_a_clear_error(world: World) -> None:
    """behavior other than allow/deny, or an id nobody asked: specific errors."""
    cli = Pair(world, Credentials("unix", pid=os.getpid(), uid=0))
    error = yield cli.error(cli.client.callRemote(wire.AnswerApproval, request="fbenr", behavior="maybe"))
    assert isinstance(error, wire.InvalidArgument) and "allow or deny" in str(error)
    if OURSELVES_REFUSED is None:
        error = yield cli.error(cli.client.callRemote(wire.AnswerApproval, request="fbenr", behavior="allow"))
        assert isinstance(error, wire.UnknownApproval) and "pending: none" in str(error)
