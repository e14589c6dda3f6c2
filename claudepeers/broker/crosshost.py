"""Peers and mail across the hosts of one PostgreSQL database (DESIGN 7, "Delivery across hosts").

Each broker owns its own peers; the peers of other hosts are read from the database into
:class:`RemotePeer` objects, so that ids and names resolve network-wide (``name@host``
always works) and ``list_peers(scope="network")`` lists everyone.

A send to a peer of another host is committed by the sender's broker like any other; the
database's trigger on ``messages`` (network.sql) ``NOTIFY``s the recipient's host in the
same transaction. That broker reads the new rows (the notification names the recipient
and the range of ids), hands them to its local actor, which pushes them to the bridge;
the outcome (shown after the acknowledgement's commit, woke, queued and why) goes back to
the sending host as a notification, and the waiting ``send_message`` answers with it. No
word from there within the wait: the sender reads the row (acknowledged or not) and says
so. After every (re)connect of the listener each side reads what it may have missed:
notifications are a wake-up, never the record.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import succeed
from twisted.logger import Logger

from claudepeers.broker import hosts as hostnames
from claudepeers.broker.peers import SHOWN, WOKE
from claudepeers.broker.records import GONE, Message, PeerRecord
from claudepeers.broker.outcomes import OutcomeWaits
from claudepeers.broker.remotepeers import RemotePeer, thd_mail_range

if TYPE_CHECKING:
    from claudepeers.broker.core import Broker
    from claudepeers.broker.hosts import HostRegistration

#: The channel every broker listens on for changes of peers (payload: ``peers <host>``).
BROADCAST = "claude_peers"
#: Message ids remembered as handed to a local actor (a repeated notification hands nothing).
REMEMBER_HANDED = 50_000
#: Every this many heartbeats the remote peers are read again (a missed notification heals).
RELOAD_EVERY_BEATS = 5


class Network:
    """The remote peers, the listener's notifications and the waits for remote outcomes."""

    log = Logger()

    def __init__(self, broker: "Broker", registration: "HostRegistration",
                 listener_factory: Callable[..., Any]) -> None:
        self._broker = broker
        self.registration = registration
        self.host = broker.host
        self.remote: dict[str, RemotePeer] = {}
        self._listener = listener_factory(
            channels=[hostnames.channel(self.host), BROADCAST], on_notice=self._notice,
            on_connected=self._connected, on_lost=self._lost,
        )
        self.listening = False
        self.listener_state = "connecting"
        #: Messages handed to a local actor, and the host each came from.
        self._handed: dict[int, tuple[str, str]] = {}
        self._handed_order: deque[int] = deque()
        #: Messages whose ``woke`` the sender's host was told before their acknowledgement.
        self._told_woke: set[int] = set()
        self.outcomes = OutcomeWaits(broker, registration)
        self._reading: dict[str, list[int] | None] = {}
        self._reload_running = False
        self._reload_again = False
        self._outbox: list[tuple[str, str]] = []
        self._telling = False
        self._beats = 0
        #: Peers whose read of new mail failed (the database was away): read again in full
        #: at the next heartbeat that reaches the database.
        self._missed: set[str] = set()

    # --- start and stop --------------------------------------------------------------------

    def start(self) -> Any:
        """Read the other hosts' peers, then listen; fires when the peers are read."""
        self.registration.on_beat = self._beaten
        self._listener.start()
        return self.reload()

    def stop(self) -> Any:
        """Stop listening (waits for the listener's thread)."""
        self.outcomes.cancel()
        return self._listener.stop()

    # --- remote peers ---------------------------------------------------------------------

    def reload(self) -> Any:
        """Read every live peer of the other hosts (one read at a time; a request meanwhile
        runs once more after it)."""
        if self._reload_running:
            self._reload_again = True
            return None
        self._reload_running = True
        store = self._broker.store
        d = store.load_peers(include_gone=False)
        d.addCallback(lambda records: store.unread_counts().addCallback(lambda counts: (records, counts)))
        d.addCallback(self._know_their_hosts)
        d.addCallback(self._loaded)
        d.addErrback(self._reload_failed)
        return d

    def _know_their_hosts(self, result: tuple[list[PeerRecord], dict[str, int]]) -> Any:
        """A peer of a host that joined since our last heartbeat: read the hosts first, so
        that its peers never show (or answer sends) as unreachable for want of a beat."""
        known = self.registration.hosts
        if all(record.host == self.host or record.host in known for record in result[0]):
            return result
        d = self.registration.refresh()
        d.addErrback(lambda _: None)  # the database is away: the next heartbeat reads them
        d.addCallback(lambda _: result)
        return d

    def _loaded(self, result: tuple[list[PeerRecord], dict[str, int]]) -> None:
        records, counts = result
        fresh: dict[str, RemotePeer] = {}
        for record in records:
            if record.host == self.host:
                continue
            peer = self.remote.get(record.id)
            if peer is None:
                peer = RemotePeer(record, counts.get(record.id, 0), self)
            else:
                peer.record, peer.unread = record, counts.get(record.id, 0)
            fresh[record.id] = peer
        self.remote = fresh
        self._broker._records_changed()
        self._reload_done()

    def _reload_failed(self, failure: Any) -> None:
        if not getattr(failure.value, "reported", False):
            self.log.warn("reading the other hosts' peers failed: {err}", err=failure.getErrorMessage())
        self._reload_done()

    def _reload_done(self) -> None:
        self._reload_running = False
        if self._reload_again:
            self._reload_again = False
            self.reload()

    def live(self) -> list[RemotePeer]:
        """The remote peers that have not ended."""
        return [peer for peer in self.remote.values() if peer.state != GONE]

    def find(self, target: str) -> list[RemotePeer]:
        """Remote peers a target names: ``name@host``, ``id@host``, an id or a live name."""
        name, _, host = target.partition("@")
        found = []
        for peer in self.remote.values():
            if host and peer.host != host:
                continue
            if peer.id == name or (peer.name == name and peer.state != GONE):
                found.append(peer)
        return found

    def listed(self, scope: str, caller: Any, include_offline: bool) -> list[dict[str, Any]]:
        """Wire dicts of the live remote peers in ``scope`` (``network``: all; ``repo``: the
        caller's repository by its identity across hosts, root commit and remote URL)."""
        wanted = getattr(getattr(caller, "record", None), "repo_id", None)
        if scope == "repo" and not wanted:
            return []
        chosen = [p for p in self.live() if (include_offline or p.state != "offline")
                  and (scope != "repo" or p.record.repo_id == wanted)]
        chosen.sort(key=lambda p: (p.state != "online", p.host, p.name))
        return [peer.to_wire() for peer in chosen]

    def status(self) -> dict[str, Any]:
        """The hosts of the network and how this broker reaches the database, for ``status``."""
        counts: dict[str, int] = {}
        for peer in self.live():
            counts[peer.host] = counts.get(peer.host, 0) + 1
        counts[self.host] = sum(1 for actor in self._broker.actors.values() if actor.state != GONE)
        hosts = [info.to_wire(counts.get(name, 0), name == self.host)
                 for name, info in sorted(self.registration.hosts.items())]
        return {
            "hosts": hosts,
            "network": {"database": self.registration.state, "notifications": self.listener_state,
                        "waiting_for_other_hosts": len(self.outcomes),
                        "unreachable_after_seconds": self.registration.unreachable_after},
        }

    # --- notifications -----------------------------------------------------------------------

    def _notice(self, channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        try:
            if kind == "mail":
                to_id, low, high = rest.split(" ")
                self.catch_up(to_id, int(low), int(high))
            elif kind == "acked":
                for message_id in rest.split(","):
                    self.outcomes.told(int(message_id), SHOWN, "has been shown the message")
            elif kind == "outcome":
                message_id, status, detail = rest.split(" ", 2)
                self.outcomes.told(int(message_id), status, detail)
            elif kind == "peers":
                if rest != self.host:
                    self.reload()
            elif kind == "kill" and self._broker.remote_kills is not None:
                self._broker.remote_kills.notice(rest)
        except ValueError:
            self.log.warn("ignoring a malformed notification on {channel}: {payload!r}", channel=channel,
                          payload=payload[:200])

    def _connected(self) -> None:
        """(Re)connected: read everything a lost notification may have carried."""
        self.listening = True
        self.listener_state = "listening"
        self.log.info("host {host}: listening for the network's notifications", host=self.host)
        self.reload()
        for actor in list(self._broker.actors.values()):
            if actor.state != GONE:
                self.catch_up(actor.id)
        self.outcomes.recheck()
        if self._broker.remote_kills is not None:
            self._broker.remote_kills.catch_up()

    def _lost(self, why: str) -> None:
        if self.listening:
            self.log.warn("host {host}: lost the database's notifications ({why})", host=self.host, why=why)
        self.listening = False
        self.listener_state = f"not listening: {why}"

    def _beaten(self, hosts: dict[str, Any]) -> None:
        self._beats += 1
        missed, self._missed = self._missed, set()
        for peer_id in missed:
            self.catch_up(peer_id)
        if self._beats % RELOAD_EVERY_BEATS == 0:
            self.reload()

    # --- mail for our peers from other hosts ------------------------------------------------

    def catch_up(self, peer_id: str, low: int = 0, high: int | None = None) -> None:
        """Read ``peer_id``'s unacknowledged mail from other hosts (ids ``low``..``high``, or
        all) and hand what is new to its actor; one read per peer at a time, in order."""
        actor = self._broker.actors.get(peer_id)
        if actor is None or actor.state == GONE:
            return
        if peer_id in self._reading:
            pending = self._reading[peer_id]
            if pending is None or high is None:
                self._reading[peer_id] = [0, -1]  # -1: everything
            else:
                self._reading[peer_id] = [min(pending[0], low), max(pending[1], high)]
            return
        self._reading[peer_id] = None
        if high is None:  # everything (after a reconnect): through the store
            d = self._broker.store.unread(peer_id)
        else:
            # A notified range was committed by another host: read it on this host's own
            # connection at once, not behind this broker's queued writes (the store's reads
            # wait for those, and would add a commit's time to every cross-host message).
            d = self.registration.run(thd_mail_range, peer_id, low, high)
        d.addCallback(self._hand, actor)
        d.addErrback(self._read_failed, peer_id)
        d.addBoth(self._read_done, peer_id)

    def _hand(self, messages: list[Message], actor: Any) -> None:
        for message in messages:
            if message.from_host in (None, self.host) or message.id in self._handed:
                continue
            self._remember(message.id, message.from_host, actor.id)
            actor.accept(message, partial(self._local_outcome, message))

    def _remember(self, message_id: int, host: str, to_id: str) -> None:
        self._handed[message_id] = (host, to_id)
        self._handed_order.append(message_id)
        while len(self._handed_order) > REMEMBER_HANDED:
            self._handed.pop(self._handed_order.popleft(), None)

    def before_woke(self, actor: Any, message_ids: list[int]) -> Any:
        """A rewake hook woke local peer ``actor`` with these messages (only its own count) and will acknowledge
        them: tell their senders' hosts ``woke`` first (fires once committed). The ack's own
        commit notifies ``acked``, meaning "shown" (network.sql); notifications arrive in
        commit order, so the sender hears ``woke`` first. A database away loses only the word."""
        ours = [i for i in message_ids if self._handed.get(i, ('', ''))[1] == actor.id]
        if not ours:
            return succeed(None)
        if len(self._told_woke) > REMEMBER_HANDED:
            self._told_woke.clear()  # ids whose acknowledgement never came (already shown)
        self._told_woke.update(ours)
        d = self.registration.notify([(hostnames.channel(self._handed[i][0]),
                                       f"outcome {i} woke {actor.name} was idle and has been woken with the message")
                                      for i in ours])
        d.addErrback(lambda _: None)
        return d

    def _read_failed(self, failure: Any, peer_id: str) -> None:
        # The listener may be back before this host's connection is (a notification then
        # finds no connection to read on): the next good heartbeat reads the lot.
        self._missed.add(peer_id)
        if not getattr(failure.value, "reported", False):
            self.log.warn("reading new mail of {peer} failed: {err}", peer=peer_id, err=failure.getErrorMessage())

    def _read_done(self, _: Any, peer_id: str) -> None:
        pending = self._reading.pop(peer_id, None)
        if pending is not None:
            if pending[1] == -1:
                self.catch_up(peer_id)
            else:
                self.catch_up(peer_id, pending[0], pending[1])

    def _local_outcome(self, message: Message, status: str, detail: str) -> None:
        """Our actor says what became of a message from another host: tell that host. A
        ``shown`` is told by the acknowledgement's own commit (network.sql's trigger), so
        that the sender never hears it before the record says so."""
        host = message.from_host
        if host is None or status == SHOWN:
            return
        if status == WOKE and message.id in self._told_woke:
            self._told_woke.discard(message.id)
            return  # told before the acknowledgement (before_woke)
        self._tell(host, message.id, status, detail)

    def _tell(self, host: str, message_id: int, status: str, detail: str) -> None:
        """Queue an outcome for its sender's host; what queues while one batch of them is
        being notified goes in the next (one commit per batch, not per message)."""
        text = " ".join(detail.split())[:500]
        self._outbox.append((hostnames.channel(host), f"outcome {message_id} {status} {text}"))
        if not self._telling:
            self._tell_batch()

    def _tell_batch(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch:
            self._telling = False
            return
        self._telling = True
        d = self.registration.notify(batch)
        d.addErrback(lambda _: None)  # the senders' brokers read the rows at their deadlines
        d.addBoth(lambda _: self._tell_batch())

    # --- mail from our peers to other hosts (outcomes.OutcomeWaits) ---------------------

    def await_outcome(self, peer: RemotePeer, message: Message, outcome: Callable[[str, str], Any]) -> None:
        """Wait for the recipient's host to say how a committed message went (bounded)."""
        self.outcomes.wait(peer, message, outcome)

    def waiting(self) -> int:
        """How many sends wait for another host's word."""
        return len(self.outcomes)
