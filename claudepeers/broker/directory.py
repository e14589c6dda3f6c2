"""The peer directory: this broker's peers by id, by name and by agent session.

Three lookups answer what a target names (:meth:`PeerDirectory.exact`, then
:meth:`~PeerDirectory.ended`, then :meth:`~PeerDirectory.suggest` for the error), and
:meth:`~PeerDirectory.of_session` finds the peer of an agent session. Pure data: no store,
no clock, no network (``Broker.resolve`` asks the other hosts between the lookups).

The name index is rebuilt on the first lookup after any change (a peer added, removed, or
a record replaced: :meth:`~PeerDirectory.changed`): a send resolves its target every time,
while names change rarely.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from claudepeers.broker.records import GONE
from claudepeers.common import agents
from claudepeers.common.errors import AmbiguousPeer, UnknownPeer


class PeerDirectory:
    """Peers (``PeerActor``s) by id, with a live-name index; ``actors`` is the dict itself."""

    def __init__(self) -> None:
        #: Every known peer by id, gone ones too until the retention period ends.
        self.actors: dict[str, Any] = {}
        self._names: dict[str, list[Any]] | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.actors.values())

    def __len__(self) -> int:
        return len(self.actors)

    def add(self, actor: Any) -> None:
        """Know ``actor`` under its id."""
        self.actors[actor.id] = actor
        self._names = None

    def remove(self, peer_id: str) -> None:
        """Forget a peer (its retention ended)."""
        del self.actors[peer_id]
        self._names = None

    def changed(self) -> None:
        """A record changed (name, state): the name index is rebuilt on the next lookup."""
        self._names = None

    def live_by_name(self) -> dict[str, list[Any]]:
        """Live (not gone) peers by name."""
        names = self._names
        if names is None:
            names = {}
            for actor in self.actors.values():
                if actor.record.state != GONE:
                    names.setdefault(actor.record.name, []).append(actor)
            self._names = names
        return names

    # --- the three lookups of a target ---------------------------------------------------

    def exact(self, target: str) -> Any | None:
        """The peer whose id is ``target``, else the live peer of that name; None if neither.

        AmbiguousPeer when ``target`` is one peer's id and another's name.
        """
        by_id = self.actors.get(target)
        by_name = self.live_by_name().get(target, ())
        if by_id is not None and by_name and by_name[0] is not by_id:
            raise AmbiguousPeer(f"{target!r} is both the id of {by_id.name} and the name of peer {by_name[0].id}; "
                                f"candidates: {describe([by_id, *by_name])}")
        return by_id or (by_name[0] if by_name else None)

    def ended(self, name: str) -> Any | None:
        """The peer that last held ``name`` and has ended (a name no live peer holds may
        still name one), None if none did."""
        ended = [a for a in self.actors.values() if a.state == GONE and a.name == name]
        return max(ended, key=lambda a: a.record.gone_at or 0) if ended else None

    def suggest(self, target: str, caller: Any = None) -> list[Any]:
        """Live peers other than ``caller`` whose id or name begins with ``target`` (any case)."""
        lowered = target.lower()
        return [a for a in self.live(caller) if a.id.startswith(lowered) or a.name.lower().startswith(lowered)]

    def not_found(self, target: str, caller: Any = None) -> Exception:
        """The error for a target no lookup found: AmbiguousPeer when it begins several
        peers' ids or names, else UnknownPeer listing the close ones (or every live one)."""
        close = self.suggest(target, caller)
        if len(close) > 1:
            return AmbiguousPeer(f"{target!r} matches several peers: {describe(close)}")
        hint = describe(close or self.live(caller)) or "no peers are connected"
        return UnknownPeer(f"no peer has the id or name {target!r}; candidates: {hint}")

    # --- other lookups ---------------------------------------------------------------------

    def live(self, caller: Any = None) -> list[Any]:
        """Peers not gone, other than ``caller``."""
        return [a for a in self.actors.values() if a.state != GONE and a is not caller]

    def of_session(self, host: str, agent_pid: int, agent_start: float, thread_id: str | None = None,
                   revive: bool = False) -> Any | None:
        """The live peer of the agent session (pid + start time [+ thread]) on ``host``, if any;
        with ``revive``, an ended thread peer too."""
        for actor in self.actors.values():
            record = actor.record
            if (
                (record.state != GONE or (revive and thread_id is not None))
                and record.thread_id == thread_id
                and record.host == host
                and record.agent_pid == agent_pid
                and agents.same_start(record.agent_start, agent_start)
            ):
                return actor
        return None


def describe(actors: Iterable[Any]) -> str:
    """Peers as an error lists them: ``name (id, state)``."""
    return ", ".join(f"{a.name} ({a.id}, {a.state})" for a in actors)
