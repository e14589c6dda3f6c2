"""The AMP layer without sockets (iosim): gatekeeping and clear errors for bad input."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from claudepeers.wire import commands as wire
from claudepeers.broker.core import Credentials
from claudepeers.broker.protocol import BrokerProtocol

from broker_fakes import World
from broker_pair import Pair


def unix(world: World) -> Credentials:
    """Credentials of a bridge process under a fresh fake agent."""
    _, bridge = world.agent()
    return Credentials("unix", pid=bridge, uid=0)


@pytest_twisted.inlineCallbacks
def test_other_uid_is_refused_on_every_command_then_dropped(world: World) -> None:
    """A UNIX client of another uid gets PermissionDenied, then the connection closes."""
    pair = Pair(world, Credentials("unix", pid=4321, uid=1000))
    error = yield pair.error(pair.client.callRemote(wire.Hello))
    assert isinstance(error, wire.PermissionDenied) and "uid 1000" in str(error)
    world.clock.advance(2.0)
    pair.pump.flush()
    assert pair.server.closed


@pytest_twisted.inlineCallbacks
def test_tcp_needs_the_token_before_anything_else(world: World) -> None:
    """On TCP only Hello/Ping/Authenticate work before the right token is shown."""
    pair = Pair(world, Credentials("tcp"), token="s3cret")
    hello = yield pair.call(wire.Hello)
    assert hello["protocol"] == wire.PROTOCOL_VERSION
    refused = yield pair.error(pair.client.callRemote(wire.ListPeers, scope="machine"))
    assert isinstance(refused, wire.AuthenticationRequired)
    wrong = yield pair.error(pair.client.callRemote(wire.Authenticate, token="guess"))
    assert isinstance(wrong, wire.PermissionDenied)
    yield pair.call(wire.Authenticate, token="s3cret")
    listed = yield pair.call(wire.ListPeers, scope="machine")
    assert listed["peers"] == []


@pytest_twisted.inlineCallbacks
def test_tcp_without_a_configured_token_refuses_everything(world: World) -> None:
    """A TCP connection to a listener without a token (misconfiguration) is refused."""
    pair = Pair(world, Credentials("tcp"), token=None)
    error = yield pair.error(pair.client.callRemote(wire.Authenticate, token="anything"))
    assert isinstance(error, wire.PermissionDenied)


@pytest_twisted.inlineCallbacks
def test_wrong_argument_type_is_a_clear_error_and_the_connection_lives(world: World) -> None:
    """A non-integer where an Integer belongs gets InvalidArgument; the connection keeps serving."""
    pair = Pair(world, unix(world))
    error = yield pair.error(pair.client.callRemoteString(b"FetchUnread", limit=b"lots"))
    assert isinstance(error, amp.RemoteAmpError) and error.errorCode == b"INVALID_ARGUMENT"
    assert "malformed arguments for FetchUnread" in error.description
    assert (yield pair.call(wire.Hello))["version"]


@pytest_twisted.inlineCallbacks
def test_missing_argument_names_it(world: World) -> None:
    """A command without a required argument is told which one is missing."""
    pair = Pair(world, unix(world))
    error = yield pair.error(pair.client.callRemoteString(b"Send", to=b"someone"))
    assert error.errorCode == b"INVALID_ARGUMENT"
    assert "missing argument body" in error.description


@pytest_twisted.inlineCallbacks
def test_bad_json_in_a_json_argument_is_invalid_not_fatal(world: World) -> None:
    """Garbage where JSON belongs is InvalidArgument, not a dropped connection."""
    _, bridge = world.agent()
    pair = Pair(world, Credentials("unix", pid=bridge, uid=0))
    error = yield pair.error(pair.client.callRemoteString(b"Deliver", messages=b"{not json"))
    # Deliver is a broker->bridge command: the broker does not answer it at all.
    assert isinstance(error, amp.UnhandledCommand)
    assert (yield pair.call(wire.Hello))["pid"]


def test_a_box_with_no_command_or_answer_drops_only_its_connection(world: World) -> None:
    """An empty box, or one with neither a command nor an answer, cannot be answered: that
    connection is dropped with a log line (no traceback), and nothing is raised."""
    creds = unix(world)
    for stream in (b"\x00\x00", amp.AmpBox({b"key": b"value"}).serialize()):
        server = BrokerProtocol(world.broker, credentials=lambda transport: creds, uid=0)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(stream)
        assert transport.disconnecting


@pytest_twisted.inlineCallbacks
def test_unknown_command_is_unhandled_and_the_connection_lives(world: World) -> None:
    """An unknown command gets AMP's UNHANDLED error; the connection keeps serving."""
    pair = Pair(world, unix(world))
    error = yield pair.error(pair.client.callRemoteString(b"SelfDestruct"))
    assert isinstance(error, amp.UnhandledCommand) and "SelfDestruct" in str(error)
    assert (yield pair.call(wire.Hello))["version"]


@pytest_twisted.inlineCallbacks
def test_peer_commands_need_registration(world: World) -> None:
    """SetSummary, FetchUnread, Whoami before Register say 'register first'."""
    pair = Pair(world, unix(world))
    for command, kwargs in ((wire.SetSummary, {"summary": "x"}), (wire.FetchUnread, {}), (wire.Whoami, {})):
        error = yield pair.error(pair.client.callRemote(command, **kwargs))
        assert isinstance(error, wire.NotRegistered)


@pytest.mark.logs_errors  # the unexpected exception is logged, as it should be
@pytest_twisted.inlineCallbacks
def test_unexpected_exception_is_internal_error_not_a_dropped_connection(world: World, monkeypatch: Any) -> None:
    """A bug in a responder answers InternalError and leaves the connection (and others) up."""
    pair = Pair(world, unix(world))

    def broken() -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(world.broker, "status", broken)
    error = yield pair.error(pair.client.callRemote(wire.Status))
    assert isinstance(error, wire.InternalError)
    assert (yield pair.call(wire.Hello))["version"]


@pytest_twisted.inlineCallbacks
def test_register_over_the_wire_then_push_and_acknowledge(world: World) -> None:
    """Register binds the connection; a message is pushed with Deliver and acknowledged."""
    seen = []

    class Bridge(amp.CommandLocator):
        @wire.Deliver.responder
        def deliver(self, messages: list) -> dict:
            seen.extend(messages)
            return {"shown": [False] * len(messages)}

    agent, bridge = world.agent()
    pair = Pair(world, Credentials("unix", pid=bridge, uid=0), locator=Bridge())
    answer = yield pair.call(wire.Register, agent_pid=agent, agent_start=100.0, client_type="codex",
                             cwd="/src/api", delivery="inline", name="worker")
    assert answer["name"] == "worker" and not answer["resumed"]
    cli = Pair(world, unix(world))
    sent = yield cli.call(wire.Send, to="worker", body="do the thing")
    assert sent["status"] == "queued" and [m["body"] for m in seen] == ["do the thing"]
    unread = yield pair.call(wire.FetchUnread)
    assert [m["id"] for m in unread["messages"]] == [sent["message_id"]]
    acked = yield pair.call(wire.Acknowledge, message_ids=[sent["message_id"]])
    assert acked["acknowledged"] == 1
    assert (yield pair.call(wire.FetchUnread))["messages"] == []


@pytest_twisted.inlineCallbacks
def test_a_connection_cannot_register_twice(world: World) -> None:
    """One connection is one peer: a second Register is refused."""
    agent, bridge = world.agent()
    pair = Pair(world, Credentials("unix", pid=bridge, uid=0))
    yield pair.call(wire.Register, agent_pid=agent, agent_start=100.0, client_type="codex", cwd="/a", delivery="none")
    error = yield pair.error(pair.client.callRemote(
        wire.Register, agent_pid=agent, agent_start=100.0, client_type="codex", cwd="/a", delivery="none"))
    assert isinstance(error, wire.AlreadyRegistered)
