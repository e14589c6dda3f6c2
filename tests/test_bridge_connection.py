"""The bridge's broker link against a fake AMP broker on a real temporary UNIX socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from claudepeers.wire import commands as wire
from claudepeers.bridge.connection import BrokerLink
from claudepeers.bridge.broker_calls import BrokerTimeout, BrokerUnreachable
from claudepeers.common.settings import Settings

REGISTRATION = {
    "agent_pid": 1234,
    "agent_start": 1.5,
    "client_type": "codex",
    "cwd": "/w",
    "git_root": None,
    "git_common_dir": None,
    "branch": None,
    "tty": None,
    "name": "api",
    "delivery": "inline",
}


class FakeBroker(amp.AMP):
    """Records registrations; answers Whoami; lets the test push and disconnect."""

    def __init__(self, record: "Recorder") -> None:
        super().__init__()
        self.record = record

    def connectionMade(self) -> None:
        super().connectionMade()
        self.record.connections.append(self)

    @wire.Hello.responder
    def hello(self) -> dict:
        return {"version": "test", "pid": 4242, "protocol": self.record.protocol}

    @wire.Register.responder
    def register(self, **arguments: Any) -> dict:
        self.record.registrations.append({k: v for k, v in arguments.items() if k != "secret" or v is not None})
        return {"peer_id": "ab12cd34", "name": arguments["name"], "resumed": len(self.record.registrations) > 1,
                "peer": {"id": "ab12cd34"}}

    @wire.Whoami.responder
    def whoami(self) -> Any:
        if self.record.hang is not None:
            return self.record.hang  # a stopped broker: the answer comes when the test says
        return {"peer": {"id": "ab12cd34", "name": "api"}}

    @wire.Send.responder
    def send(self, to: str, body: str, client_key: str | None = None, reply_to: int | None = None) -> Any:
        """The first send dies with the connection (unanswered); later ones are answered."""
        self.record.sends.append(client_key)
        if len(self.record.sends) == 1:
            self.transport.loseConnection()
            return Deferred()
        return {"message_id": 9, "status": "shown", "detail": "", "to_id": "x", "to_name": to}


class Recorder:
    def __init__(self) -> None:
        self.connections: list[FakeBroker] = []
        self.registrations: list[dict] = []
        self.sends: list[str | None] = []
        self.protocol = wire.PROTOCOL_VERSION
        self.hang: Deferred | None = None


def settings_for(base: Path) -> Settings:
    return Settings.from_env({"HOME": str(base), "CLAUDE_PEERS_SOCKET": str(base / "b.sock"),
                              "CLAUDE_PEERS_NO_AUTOSTART": "1", "CLAUDE_PEERS_CALL_TIMEOUT_SECONDS": "0.3"})


class Registered:
    """Fires Deferreds as registrations complete."""

    def __init__(self) -> None:
        self.answers: list[dict] = []
        self._waiting: list[tuple[int, Deferred]] = []

    def __call__(self, answer: dict) -> None:
        self.answers.append(answer)
        for count, d in list(self._waiting):
            if len(self.answers) >= count:
                self._waiting.remove((count, d))
                d.callback(answer)

    def wait(self, count: int) -> Deferred:
        d: Deferred = Deferred()
        if len(self.answers) >= count:
            d.callback(self.answers[-1])
        else:
            self._waiting.append((count, d))
        return d.addTimeout(10, reactor)


@pytest.fixture
def listening(short_dir: Path) -> Any:
    """A fake broker listening on a short socket path; yields (settings, recorder, start)."""
    record = Recorder()
    ports: list[Any] = []

    def start() -> Deferred:
        endpoint = UNIXServerEndpoint(reactor, str(short_dir / "b.sock"))
        return endpoint.listen(Factory.forProtocol(lambda: FakeBroker(record))).addCallback(ports.append)

    yield settings_for(short_dir), record, start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def connected(listening: Any) -> Any:
    """Starts the fake broker and a link to it: ``yield connected(**make_link options)`` fires
    with (recorder, link, registered) once the link has registered; links stop afterwards."""
    settings, record, start = listening
    links: list[BrokerLink] = []

    @inlineCallbacks
    def connect(**options: Any) -> Any:
        yield start()
        registered = Registered()
        link = make_link(settings, registered, **options)
        links.append(link)
        link.start()
        yield registered.wait(1)
        return record, link, registered

    yield connect
    for link in links:
        pytest_twisted.blockon(link.stop())


def make_link(settings: Settings, registered: Registered, delivered: list | None = None,
              call_wait: float = 5.0, shown_elsewhere: list | None = None) -> BrokerLink:
    def on_deliver(message: dict) -> bool:
        if delivered is not None:
            delivered.append(message)
        return message["id"] % 2 == 0

    return BrokerLink(reactor, settings, lambda: succeed(dict(REGISTRATION)), on_deliver, registered,
                      on_shown_elsewhere=(shown_elsewhere if shown_elsewhere is not None else []).extend,
                      call_wait=call_wait)


@pytest_twisted.inlineCallbacks
def test_registers_again_on_every_new_connection(connected: Any) -> Any:
    """After the broker drops the connection, the link reconnects and registers the same session."""
    record, link, registered = yield connected()
    record.connections[0].transport.loseConnection()
    answer = yield registered.wait(2)
    yield link.when_ready()
    yield deferLater(reactor, 0, lambda: None)  # leave the service's state machine first
    assert answer["resumed"] is True
    # thread_id (optional, None here) names a Codex thread; repo_id the repository across hosts.
    assert record.registrations == [{**REGISTRATION, "thread_id": None, "repo_id": None}] * 2


@pytest_twisted.inlineCallbacks
def test_pushes_are_answered_by_the_inbox(connected: Any) -> Any:
    """A Deliver from the broker reaches on_deliver and its answer goes back as shown."""
    delivered: list = []
    record, link, _ = yield connected(delivered=delivered)
    first = yield record.connections[0].callRemote(wire.Deliver, messages=[{"id": 2, "body": "x"}])
    second = yield record.connections[0].callRemote(wire.Deliver, messages=[{"id": 3, "body": "y"}])
    assert (first["shown"], second["shown"]) == ([True], [False]) and not (first.get("woke") or second.get("woke"))
    assert [m["id"] for m in delivered] == [2, 3]


@pytest_twisted.inlineCallbacks
def test_messages_shown_by_a_hook_are_reported_to_the_inbox(connected: Any) -> Any:
    """ShownElsewhere from the broker reaches the inbox (so those messages are never shown here)."""
    elsewhere: list = []
    record, link, _ = yield connected(shown_elsewhere=elsewhere)
    record.connections[0].callRemote(wire.ShownElsewhere, message_ids=[4, 5])
    yield link.call(wire.Whoami)  # answered after the notice, on the same connection
    assert elsewhere == [4, 5]


@pytest_twisted.inlineCallbacks
def test_calls_wait_for_the_broker_to_come_up(listening: Any) -> Any:
    """A tool call made before the broker listens waits, then succeeds once registered."""
    settings, _record, start = listening
    registered = Registered()
    link = make_link(settings, registered)
    link.start()
    try:
        pending = link.call(wire.Whoami)
        yield start()
        answer = yield pending
        assert answer["peer"]["name"] == "api"
    finally:
        yield link.stop()


@pytest_twisted.inlineCallbacks
def test_calls_fail_clearly_without_a_broker(short_dir: Path) -> Any:
    """No broker and no autostart: the call ends with BrokerUnreachable naming the socket."""
    settings = settings_for(short_dir)
    link = make_link(settings, Registered(), call_wait=0.3)
    link.start()
    try:
        with pytest.raises(BrokerUnreachable, match="no broker answers at .*b.sock"):
            yield link.call(wire.Whoami)
    finally:
        yield link.stop()


@pytest_twisted.inlineCallbacks
def test_a_broker_speaking_another_protocol_is_named_and_not_registered_with(listening: Any) -> Any:
    """An older broker left running after an upgrade: no Register, and calls fail with a text
    that names the broker and says how to restart it."""
    settings, record, start = listening
    record.protocol = wire.PROTOCOL_VERSION - 1
    yield start()
    link = make_link(settings, Registered(), call_wait=0.5)
    link.start()
    try:
        with pytest.raises(BrokerUnreachable, match=rf"pid 4242.*protocol {wire.PROTOCOL_VERSION - 1}.*kill-broker"):
            yield link.call(wire.Whoami)
        assert record.registrations == []
    finally:
        yield link.stop()


@pytest_twisted.inlineCallbacks
def test_a_rejected_connection_ends_quietly_when_the_broker_closes_it_after_the_stop(listening: Any) -> Any:
    """A connection whose registration failed is closed by the link; when its end comes after
    the link stopped, nothing is logged (it was an automat NoTransition, "Unhandled Error")."""
    settings, record, start = listening
    record.protocol = wire.PROTOCOL_VERSION - 1
    yield start()
    link = make_link(settings, Registered(), call_wait=0.5)
    link.start()
    for _ in range(200):  # until the first registration has been refused
        if link.last_error.startswith("registration failed"):
            break
        yield deferLater(reactor, 0.01, lambda: None)
    yield link.stop()
    for connection in record.connections:
        if connection.transport is not None:  # the link closed it already, or not (the bug)
            connection.transport.loseConnection()
    yield deferLater(reactor, 0.1, lambda: None)  # both ends see the close
    assert link.last_error.startswith("registration failed")


@pytest_twisted.inlineCallbacks
def test_a_keyed_send_is_repeated_after_the_connection_dies_under_it(connected: Any) -> Any:
    """A Send with a client_key lost with its connection is sent again, with the same key."""
    record, link, _ = yield connected()
    answer = yield link.call(wire.Send, to="bob", body="hi", client_key="key-1")
    assert answer["message_id"] == 9
    assert record.sends == ["key-1", "key-1"]


@pytest_twisted.inlineCallbacks
def test_an_unkeyed_send_is_not_repeated(connected: Any) -> Any:
    """Without a client_key a lost Send is reported, never silently repeated."""
    record, link, _ = yield connected()
    with pytest.raises(BrokerUnreachable, match="send it again"):
        yield link.call(wire.Send, to="bob", body="hi")
    assert record.sends == [None]


@pytest_twisted.inlineCallbacks
def test_superseded_notice_reaches_the_session(connected: Any) -> Any:
    """The broker's Superseded notice is handed to the session (which then exits)."""
    reasons: list = []
    record, link, _ = yield connected()
    link.on_superseded = reasons.append
    record.connections[0].callRemote(wire.Superseded, reason="a newer bridge")
    yield link.call(wire.Whoami)
    assert reasons == ["a newer bridge"]


@pytest_twisted.inlineCallbacks
def test_a_call_the_broker_does_not_answer_ends_at_its_deadline(connected: Any) -> Any:
    """A registered link whose broker stops answering fails the call at the deadline; the
    late answer is dropped quietly and the next call works."""
    record, link, _ = yield connected()
    record.hang = Deferred()
    with pytest.raises(BrokerTimeout, match="did not answer within 0.3 s"):
        yield link.call(wire.Whoami)
    late, record.hang = record.hang, None
    late.callback({"peer": {"id": "ab12cd34", "name": "api"}})
    answer = yield link.call(wire.Whoami)
    assert answer["peer"]["id"] == "ab12cd34"
