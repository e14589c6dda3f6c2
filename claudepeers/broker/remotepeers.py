"""Peers of other hosts, as this broker sees them (DESIGN 7): read from the shared database,
never owned here. Their own broker verifies them, delivers to them and kills them; this
broker resolves their ids and names (``name@host`` always works) and lists them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from claudepeers.broker.records import GONE, Message, OfRecord, PeerRecord
from claudepeers.broker.storage.store import MESSAGE_COLUMNS
from claudepeers.common.errors import AmbiguousPeer, PeerGone, UnknownPeer


class RemotePeer(OfRecord):
    """A peer of another host, as the database shows it; this broker never owns it."""

    delivery = "remote"
    connection = None

    # network: the crosshost.Network, typed loosely because it imports this module.
    def __init__(self, record: PeerRecord, unread: int, network: Any) -> None:
        self.record = record
        self.unread = unread
        self._network = network

    @property
    def host(self) -> str:
        """The host whose broker owns this peer."""
        return self.record.host

    def accept(self, message: Message, outcome: Callable[[str, str], Any]) -> None:
        """A committed message for this peer: its host's broker delivers it and tells us how."""
        self.unread += 1
        self._network.await_outcome(self, message, outcome)

    def to_wire(self) -> dict[str, Any]:
        """The listed form: the record, with state ``unreachable`` while its host is not heard."""
        data = {**self.record.to_wire(self.unread), "delivery": f"via host {self.host}"}
        if not self._network.registration.reachable(self.host):
            data["state"] = "unreachable"
        return data


# ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
def resolve_remote(broker: Any, target: str, allow_gone: bool = False) -> RemotePeer:
    """The peer of another host a target names (``name@host``, ``id@host``, an id or name
    no local peer has); UnknownPeer, AmbiguousPeer or PeerGone saying why not."""
    name, _, host = target.partition("@")
    network = broker.network
    if network is None:
        raise UnknownPeer(f"{target!r} names host {host!r}, but this broker is a host alone (no shared "
                          "PostgreSQL database: see the README's 'Several machines')")
    found = network.find(target)
    if not found:
        near = [p for p in network.live() if not host or p.host == host]
        hint = ", ".join(f"{p.name}@{p.host} ({p.id})" for p in near[:20]) or "none"
        where = f" on host {host}" if host else ""
        raise UnknownPeer(f"no peer has the id or name {name!r}{where}; candidates: {hint}")
    if len(found) > 1:
        raise AmbiguousPeer(f"{target!r} matches peers of several hosts: "
                            + ", ".join(f"{p.name}@{p.host} ({p.id})" for p in found) + "; say name@host")
    peer = found[0]
    if peer.state == GONE and not allow_gone:
        raise PeerGone(f"peer {peer.id} ({peer.name}@{peer.host}) has ended")
    return peer


def live_names(network: Any) -> Iterable[Any]:
    """The remote peers that take part in name uniqueness (none without a network)."""
    return network.live() if network is not None else ()


#: Mail another host committed for a peer of ours, read on this host's own connection.
_RANGE = (f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages "
          "WHERE to_id = %s AND id BETWEEN %s AND %s AND acked_at IS NULL ORDER BY id")


def thd_mail_range(conn: Any, peer_id: str, low: int, high: int) -> list[Message]:
    """The unacknowledged messages of ``peer_id`` with ids ``low``..``high`` (one statement)."""
    rows = conn.execute(_RANGE, (peer_id, low, high)).fetchall()
    return [Message(**{**dict(zip(MESSAGE_COLUMNS, row)), "verified": bool(row[6])}) for row in rows]
