"""Coordination between peers beyond single messages: groups, claims and fan-out.

The broker holds one :class:`Coordination`; it loads groups and claims at start, ends a
peer's memberships and claims when the peer is gone, and adds each peer's groups and
claims to what ``list_peers`` and ``status`` show. Logic layer: no AMP, no SQL.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from claudepeers.broker.claims import Claims
from claudepeers.broker.fanout import FanOut
from claudepeers.broker.groups import Groups
from claudepeers.broker.records import GONE



class Coordination:
    """Groups, claims and fan-out of one broker."""

    log = Logger()

    # ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self.groups = Groups(broker.store, broker.clock)
        self.claims = Claims(broker.store, broker.clock, broker.limits.max_claim_seconds, self.name_of, broker.emit)
        self.fanout = FanOut(broker)

    def name_of(self, peer_id: str) -> str:
        """A peer's current name (its id if the broker no longer knows it)."""
        actor = self._broker.actors.get(peer_id)
        return actor.name if actor is not None else peer_id

    def live_ids(self) -> set[str]:
        """Ids of the peers that have not ended."""
        return {peer_id for peer_id, actor in self._broker.actors.items() if actor.state != GONE}

    @inlineCallbacks
    def load(self) -> Any:
        """Read stored memberships and claims (the broker's peers are loaded first)."""
        store = self._broker.store
        live = self.live_ids()
        ended = self.groups.load((yield store.load_group_members()), live)
        for peer_id in ended:
            yield store.remove_group_members(peer_id, None)
        self.claims.load((yield store.load_claims()), live)

    def peer_gone(self, peer_id: str) -> None:
        """A peer has ended: it leaves its groups and its claims end."""
        self.claims.peer_gone(peer_id)
        self.groups.peer_gone(peer_id).addErrback(
            lambda f: None if getattr(f.value, "reported", False)
            else self.log.failure("removing {peer} from its groups failed", f, peer=peer_id))

    def annotate(self, peer: dict[str, Any]) -> dict[str, Any]:
        """A listed peer with its groups and its live claims."""
        peer_id = peer.get("id", "")
        peer["groups"] = self.groups.of_peer(peer_id)
        peer["claims"] = self.claims.wire(self.claims.live(peer_id=peer_id))
        return peer

    def member(self, peer_id: str) -> dict[str, Any]:
        """One group member as listed: id, name, state."""
        actor = self._broker.actors.get(peer_id)
        return {"id": peer_id, "name": actor.name if actor else peer_id, "state": actor.state if actor else GONE}

    def stop(self) -> None:
        """Stop the claims' expiry timer."""
        self.claims.stop()
