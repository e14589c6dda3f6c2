"""Named groups of peers that ``group:<name>`` messages go to.

A group exists while it has members: a peer joins and leaves it by name, and a send to
``group:<name>`` reaches every member but the sender. Membership is stored per peer id,
so it outlives the bridge's reconnects and broker restarts, and it ends when the peer is
gone. Logic layer: a store and a clock are handed in.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from claudepeers.common.errors import InvalidArgument, LimitExceeded

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The groups one peer may be in (a bound on what a peer can make the broker keep).
MAX_GROUPS_PER_PEER = 32


class Groups:
    """Which peers are in which group; mirrored in the store's ``group_members``."""

    def __init__(self, store: Any, clock: Any) -> None:
        self._store = store
        self._clock = clock
        #: group name -> {peer id: joined at}
        self._members: dict[str, dict[str, float]] = {}

    def load(self, rows: Iterable[tuple[str, str, float]], live: set[str]) -> list[str]:
        """Take the stored memberships of live peers; the ids of ended peers found (to forget)."""
        ended = set()
        for group, peer_id, joined_at in rows:
            if peer_id in live:
                self._members.setdefault(group, {})[peer_id] = joined_at
            else:
                ended.add(peer_id)
        return sorted(ended)

    @staticmethod
    def check_name(name: str) -> str:
        """A valid group name, or InvalidArgument saying the rule."""
        if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
            raise InvalidArgument(f"group name {name!r} must be 1 to 64 letters, digits, '.', '_' and '-', "
                                  "starting with a letter or digit")
        return name

    def members(self, name: str) -> list[str]:
        """The ids of the group's members, in the order they joined."""
        members = self._members.get(name, {})
        return sorted(members, key=lambda peer_id: (members[peer_id], peer_id))

    def of_peer(self, peer_id: str) -> list[str]:
        """The groups a peer is in, by name."""
        return sorted(name for name, members in self._members.items() if peer_id in members)

    def join(self, peer_id: str, name: str) -> Deferred:
        """Add the peer to the group (committed before it fires); joining twice is harmless."""
        return maybeDeferred(self._join, peer_id, name)

    def _join(self, peer_id: str, name: str) -> Deferred:
        self.check_name(name)
        members = self._members.get(name, {})
        if peer_id in members:
            return succeed(self.members(name))
        if len(self.of_peer(peer_id)) >= MAX_GROUPS_PER_PEER:
            raise LimitExceeded(f"you are in {MAX_GROUPS_PER_PEER} groups already (the most one peer may be in); "
                                "leave one first")
        joined_at = self._clock.seconds()
        d = self._store.add_group_member(name, peer_id, joined_at)

        def joined(_: Any) -> list[str]:
            self._members.setdefault(name, {})[peer_id] = joined_at
            return self.members(name)

        return d.addCallback(joined)

    def leave(self, peer_id: str, name: str) -> Deferred:
        """Take the peer out of the group; fires with False if it was not a member."""
        return maybeDeferred(self._leave, peer_id, name)

    def _leave(self, peer_id: str, name: str) -> Deferred:
        self.check_name(name)
        if peer_id not in self._members.get(name, {}):
            return succeed(False)

        def left(_: Any) -> bool:
            members = self._members.get(name, {})
            members.pop(peer_id, None)
            if not members:
                self._members.pop(name, None)
            return True

        return self._store.remove_group_members(peer_id, [name]).addCallback(left)

    def peer_gone(self, peer_id: str) -> Deferred:
        """The peer has ended: it leaves every group."""
        names = self.of_peer(peer_id)
        for name in names:
            members = self._members[name]
            members.pop(peer_id, None)
            if not members:
                del self._members[name]
        return self._store.remove_group_members(peer_id, None) if names else succeed(None)

    def listing(self, describe: Any) -> list[dict[str, Any]]:
        """Every group with its members (``describe(peer_id)`` gives a member's dict), by name."""
        return [{"name": name, "members": [describe(peer_id) for peer_id in self.members(name)]}
                for name in sorted(self._members)]
