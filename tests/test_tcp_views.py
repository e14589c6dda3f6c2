"""Over TCP the operator's views (Status, Inbox, RecentEvents, Watch) show only the
caller's own peer; on the UNIX socket they show every peer (DESIGN 4, Security)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.protocols import amp

from claudepeers.broker.core import Credentials
from claudepeers.wire import commands as wire

from broker_fakes import FakeBridge, World
from broker_pair import Pair

TOKEN = "s3cret"


@pytest.fixture
def world(short_dir: Path) -> Iterator[World]:
    """A started broker world with one peer registered over the socket ("local")."""
    w = World(short_dir)
    pytest_twisted.blockon(w.broker.start())
    agent, bridge = w.agent()
    w.local, _ = pytest_twisted.blockon(w.register(agent, bridge, FakeBridge(), name="local"))
    yield w
    pytest_twisted.blockon(w.close())


class Watcher(amp.CommandLocator):
    """A client that records the events streamed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @wire.Event.responder
    def event(self, event: dict[str, Any]) -> dict:
        self.events.append(event)
        return {}


def tcp_pair(world: World, locator: Any = None) -> Pair:
    """A TCP connection (no kernel credentials) to the broker."""
    return Pair(world, Credentials("tcp"), token=TOKEN, locator=locator)


@pytest_twisted.inlineCallbacks
def register_tcp(world: World, pair: Pair, name: str = "sandboxed") -> Any:
    """Authenticate and register the TCP pair as a Codex session of its own; its peer id."""
    agent, _ = world.agent()
    yield pair.call(wire.Authenticate, token=TOKEN)
    answer = yield pair.call(wire.Register, agent_pid=agent, agent_start=100.0, client_type="codex",
                             cwd="/work/box", delivery="none", name=name)
    return answer["peer_id"]


@pytest_twisted.inlineCallbacks
def test_tcp_status_shows_only_its_own_peer(world: World) -> None:
    """Status over TCP: the broker's health and no peer unregistered; registered, only its own peer."""
    pair = tcp_pair(world)
    yield pair.call(wire.Authenticate, token=TOKEN)
    anonymous = (yield pair.call(wire.Status))["status"]
    assert anonymous["peers"] == [] and anonymous["version"] and "UNIX socket" in anonymous["view"]
    own = yield register_tcp(world, pair)
    status = (yield pair.call(wire.Status))["status"]
    assert [peer["id"] for peer in status["peers"]] == [own]
    assert "counters" not in status and "storage" not in status and "over TCP" in status["view"]
    operator = (yield Pair(world, Credentials("unix", pid=world.agent()[1], uid=0)).call(wire.Status))["status"]
    assert {peer["id"] for peer in operator["peers"]} == {own, world.local.id}


@pytest_twisted.inlineCallbacks
def test_tcp_inbox_is_its_own_only(world: World) -> None:
    """Inbox over TCP reads the caller's own mail; another peer's is PermissionDenied."""
    cli = Pair(world, Credentials("unix", pid=world.agent()[1], uid=0))
    pair = tcp_pair(world)
    own = yield register_tcp(world, pair)
    yield cli.call(wire.Send, to="local", body="for local only")
    yield cli.call(wire.Send, to=own, body="for the sandbox")
    for target in ("local", world.local.id, "nobody"):
        refused = yield pair.error(pair.client.callRemote(wire.Inbox, target=target))
        assert isinstance(refused, wire.PermissionDenied), target
    mine = yield pair.call(wire.Inbox, target=own)
    assert [m["body"] for m in mine["messages"]] == ["for the sandbox"]
    theirs = yield cli.call(wire.Inbox, target="local")
    assert [m["body"] for m in theirs["messages"]] == ["for local only"]


@pytest_twisted.inlineCallbacks
def test_tcp_events_are_those_about_its_own_peer(world: World) -> None:
    """RecentEvents and Watch over TCP: only events about the caller's peer."""
    watcher = Watcher()
    pair = tcp_pair(world, locator=watcher)
    yield pair.call(wire.Authenticate, token=TOKEN)
    for command in (wire.Watch, wire.RecentEvents):
        refused = yield pair.error(pair.client.callRemote(command))
        assert isinstance(refused, wire.PermissionDenied)
    own = yield register_tcp(world, pair)
    yield pair.call(wire.Watch)
    cli = Pair(world, Credentials("unix", pid=world.agent()[1], uid=0))
    yield cli.call(wire.Send, to="local", body="not yours")
    yield cli.call(wire.Send, to=own, body="yours")
    yield pair.call(wire.Ping)  # the streamed events arrive before this answer
    assert watcher.events and all(own in (e.get("peer_id"), e.get("to_id")) for e in watcher.events)
    recent = (yield pair.call(wire.RecentEvents))["events"]
    assert recent and all(own in (e.get("peer_id"), e.get("to_id")) for e in recent)
    everything = (yield cli.call(wire.RecentEvents))["events"]
    assert any(e.get("to_id") == world.local.id for e in everything)
