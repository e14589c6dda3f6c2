"""A Codex peer is its thread: several threads of one app-server process are several peers.

Broker logic with a real store, a Clock and a fake process table (as test_broker.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed

from claudepeers.broker import core as broker_module
from claudepeers.wire import commands as wire
from claudepeers.common.agents import AgentProcess
from claudepeers.broker.core import Credentials
from claudepeers.broker.protocol import _shown_flags
from claudepeers.broker.records import GONE, OFFLINE, ONLINE

from broker_fakes import FakeBridge, World, failure_of

THREAD_A = "01a23386-f16d-7791-a4fa-be56ab23ec4b"
THREAD_B = "01a23388-1881-7d13-9d08-182c9b1d0a72"


def bridge_under(world: World, app_server: int) -> int:
    """One more bridge process under the app-server (one per thread)."""
    return world.process(200.0, parent=app_server)



class WakingBridge(FakeBridge):
    """A bridge that answers every push 'woke' (it ran codex queue), as the Codex bridge does."""

    def deliver(self, messages: list[dict[str, Any]]) -> Deferred:
        """Record the push; answer woke for each message."""
        self.pushed += messages
        return succeed(_shown_flags({"shown": [False] * len(messages), "woke": [True] * len(messages)}))


@pytest_twisted.inlineCallbacks
def test_two_threads_of_one_app_server_are_two_peers_and_a_thread_keeps_its_id(world: World) -> None:
    """Same app-server pid and start, two thread ids: two peers; the same thread again: the same peer."""
    app, first_bridge = world.agent()
    a, resumed_a = yield world.register(app, first_bridge, FakeBridge(), client_type="codex", thread_id=THREAD_A)
    b, _ = yield world.register(app, bridge_under(world, app), FakeBridge(), client_type="codex", thread_id=THREAD_B)
    assert a.id != b.id and a.state == b.state == ONLINE and not resumed_a
    again, resumed = yield world.register(app, bridge_under(world, app), FakeBridge(), client_type="codex",
                                          thread_id=THREAD_A)
    assert again is a and resumed and b.state == ONLINE
    assert a.record.thread_id == THREAD_A and a.record.to_wire()["thread_id"] == THREAD_A


@pytest_twisted.inlineCallbacks
def test_a_thread_whose_bridge_ended_is_gone_and_comes_back_with_its_id_when_resumed(world: World) -> None:
    """The app-server ends a thread's MCP server when it unloads the thread: the peer is gone
    (its app-server lives on); a later resume of that thread is the same peer again."""
    app, bridge = world.agent()
    connection = FakeBridge()
    actor, _ = yield world.register(app, bridge, connection, client_type="codex", thread_id=THREAD_A)
    world.processes.end(bridge)
    world.broker.disconnected(actor, connection)
    assert actor.state == OFFLINE
    world.clock.advance(broker_module.THREAD_EXIT_CHECK_SECONDS)
    assert actor.state == GONE
    with pytest.raises(wire.PeerGone):
        world.broker.resolve(actor.id)
    back, resumed = yield world.register(app, bridge_under(world, app), FakeBridge(), client_type="codex",
                                         thread_id=THREAD_A)
    assert back is actor and resumed and actor.state == ONLINE


@pytest_twisted.inlineCallbacks
def test_a_thread_whose_bridge_reconnects_stays_the_same_live_peer(world: World) -> None:
    """A dropped broker connection of a running bridge is offline, never gone."""
    app, bridge = world.agent()
    connection = FakeBridge()
    actor, _ = yield world.register(app, bridge, connection, client_type="codex", thread_id=THREAD_A)
    world.broker.disconnected(actor, connection)
    world.clock.advance(broker_module.THREAD_EXIT_CHECK_SECONDS)
    assert actor.state == OFFLINE


@pytest_twisted.inlineCallbacks
def test_a_hook_attaches_to_the_peer_of_its_own_thread(world: World) -> None:
    """Codex hooks run under the shared app-server; their session_id picks the thread."""
    app, bridge = world.agent()
    a, _ = yield world.register(app, bridge, FakeBridge(), client_type="codex", thread_id=THREAD_A)
    b, _ = yield world.register(app, bridge_under(world, app), FakeBridge(), client_type="codex", thread_id=THREAD_B)
    assert world.broker.session(app, 100.0, THREAD_B) is b
    assert world.broker.session(app, 100.0, THREAD_A) is a
    assert world.broker.session(app, 100.0) is None  # the process alone names no thread


@pytest_twisted.inlineCallbacks
def test_killing_a_thread_peer_is_refused_because_it_would_end_every_thread(world: World) -> None:
    """kill_peer of a Codex thread would kill the shared app-server: refused, with the reason."""
    app, bridge = world.agent()
    yield world.register(app, bridge, FakeBridge(), client_type="codex", thread_id=THREAD_A, name="coder")
    error = yield failure_of(world.broker.kill(None, Credentials("unix", pid=1, uid=0), "coder"))
    assert isinstance(error, wire.KillRefused) and "every interactive Codex session" in str(error)


@pytest.mark.parametrize("thread_id", ["", "x" * 65, "two words", "a/b"])
@pytest_twisted.inlineCallbacks
def test_a_malformed_thread_id_is_refused(world: World, thread_id: str) -> None:
    """thread_id is bounded and printable; anything else is an InvalidArgument naming the rule."""
    app, bridge = world.agent()
    error = yield failure_of(world.register(app, bridge, FakeBridge(), thread_id=thread_id))
    assert isinstance(error, wire.InvalidArgument) and "thread_id" in str(error)


@pytest_twisted.inlineCallbacks
def test_a_push_answered_woke_tells_the_sender_woke_and_stays_unread(world: World) -> None:
    """Deliver's optional woke flags: the sender hears 'woke' at once, the message stays unread."""
    app, bridge = world.agent()
    recipient, _ = yield world.register(app, bridge, WakingBridge(delivery="inline"), client_type="codex",
                                        thread_id=THREAD_A, name="coder")
    sender_agent, sender_bridge = world.agent()
    sender, _ = yield world.register(sender_agent, sender_bridge, FakeBridge())
    result = yield world.broker.send(sender, "coder", "please review")
    assert result["status"] == "woke" and "woken" in result["detail"]
    assert recipient.unread == 1
    unread = yield world.store.unread(recipient.id)
    assert [m.body for m in unread] == ["please review"]


def test_which_codex_processes_run_threads() -> None:
    """The app-server and a --no-daemon TUI run threads; codex exec is one session."""
    def agent(*argv: str) -> AgentProcess:
        return AgentProcess(1, 1.0, "codex", argv)

    assert agent("/home/u/.codex/packages/app-server-daemon/releases/x/bin/codex", "app-server", "--listen",
                 "unix://").runs_threads
    assert agent("/usr/bin/python3", "/tmp/bin/codex", "app-server").runs_threads
    assert agent("/opt/codex", "--no-daemon").runs_threads
    assert not agent("/opt/codex", "exec", "hello").runs_threads
    assert not agent("/opt/codex").runs_threads
    assert not AgentProcess(1, 1.0, "claude-code", ("claude", "app-server")).runs_threads
