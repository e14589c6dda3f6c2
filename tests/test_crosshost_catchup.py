"""The network (crosshost.Network) with stand-ins for the database side: catch-up, where a
notification whose read fails because this host's own connection is still down (the
listener came back first) is read again at the next heartbeat, so committed mail is never
left unread. Found as a flaky PostgreSQL restart test (2 of 9 runs left messages unshown)."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed

from claudepeers.broker.crosshost import Network
from claudepeers.broker.records import Message, ONLINE


def message(number: int) -> Message:
    """A message to ``bob`` from a peer of host ``alpha``."""
    return Message(id=number, from_id="ann", from_name="ann", from_summary="", from_cwd="/", from_client="codex",
                   verified=True, to_id="bob", body=f"m{number}", sent_at=0.0, from_host="alpha")


class Actor:
    """bob, a local peer: collects what the network hands it."""

    id, name, state = "bob", "bob", ONLINE

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def accept(self, message: Message, outcome: Callable[[str, str], Any]) -> None:
        """Take one message."""
        self.accepted.append(message.id)


class Store:
    """The store's reads: bob's unread mail from every host."""

    def __init__(self, unread: list[Message]) -> None:
        self.unread_mail = unread

    def load_peers(self, include_gone: bool = True) -> Deferred:
        """No peers of other hosts."""
        return succeed([])

    def unread_counts(self) -> Deferred:
        """Nothing unread elsewhere."""
        return succeed({})

    def unread(self, peer_id: str) -> Deferred:
        """bob's unread messages."""
        return succeed(list(self.unread_mail))


class Broker:
    """What the network reads of its broker."""

    host = "beta"
    remote_kills = None

    def __init__(self, store: Store) -> None:
        self.actors = {"bob": Actor()}
        self.store = store

    def _records_changed(self) -> None:
        """Nothing to rebuild."""


class Registration:
    """This host's own connection: down until ``up`` is set."""

    host = "beta"

    def __init__(self) -> None:
        self.up = False
        self.hosts: dict[str, Any] = {"alpha": object(), "beta": object()}
        self.on_beat: Callable[[dict[str, Any]], Any] | None = None
        self.notified: list[tuple[str, str]] = []

    def notify(self, notices: list[tuple[str, str]]) -> Deferred:
        """Record what would be notified."""
        self.notified.extend(notices)
        return succeed(None)

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred:
        """Like HostRegistration.run: fails while the connection is away."""
        if not self.up:
            return fail(ConnectionError("not connected to the database"))
        return succeed([])


class Listener:
    """The LISTEN connection: the test calls its callbacks."""

    def __init__(self, **callbacks: Any) -> None:
        self.callbacks = callbacks

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> Deferred:
        """Nothing to stop."""
        return succeed(None)


def test_mail_notified_while_this_hosts_connection_is_down_is_read_at_the_next_beat() -> None:
    """The listener is back and a notification names bob's new mail, but this host's own
    connection is not: the read fails; the next heartbeat that reaches the database reads
    bob's unread mail in full and hands it to bob once."""
    store = Store([message(7), message(8)])
    broker, registration, listeners = Broker(store), Registration(), []

    def listener(**callbacks: Any) -> Listener:
        listeners.append(Listener(**callbacks))
        return listeners[-1]

    network = Network(broker, registration, listener)  # type: ignore[arg-type]
    network.start()
    listeners[0].callbacks["on_notice"]("claude_peers:beta", "mail bob 7 8")
    assert broker.actors["bob"].accepted == []  # the read failed: the connection is down
    registration.up = True
    assert registration.on_beat is not None
    registration.on_beat(registration.hosts)
    assert broker.actors["bob"].accepted == [7, 8]
    registration.on_beat(registration.hosts)
    assert broker.actors["bob"].accepted == [7, 8]  # handed once


def test_a_woke_is_told_only_for_the_acknowledging_peers_own_messages() -> None:
    """bob's rewake hook acknowledges as woke: the senders' hosts hear woke for bob's
    messages from them, never for ids another peer's hook names."""
    store = Store([message(7)])
    broker, registration, listeners = Broker(store), Registration(), []
    registration.up = True

    def listener(**callbacks: Any) -> Listener:
        listeners.append(Listener(**callbacks))
        return listeners[-1]

    network = Network(broker, registration, listener)  # type: ignore[arg-type]
    network.start()
    listeners[0].callbacks["on_connected"]()  # reads bob's unread mail: message 7 from alpha
    assert broker.actors["bob"].accepted == [7]

    class Carol:
        id, name = "carol", "carol"

    network.before_woke(Carol(), [7])
    assert registration.notified == []
    network.before_woke(broker.actors["bob"], [7])
    assert [channel for channel, _ in registration.notified] == ["claude_peers:alpha"]
    assert "woke bob was idle" in registration.notified[0][1]
