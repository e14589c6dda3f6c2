"""AMP responders for coordination: sending to many, groups, claims (a mixin of
:class:`~claudepeers.broker.protocol.BrokerProtocol`, which gates and wraps them like its own).

A subclass of ``amp.CommandLocator`` so that its responders are its own (AMP collects
the responders of every locator class in the method resolution order).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.protocols import amp

from claudepeers.wire import commands as wire


class CoordResponders(amp.CommandLocator):
    """Responders; they use the protocol's ``broker``, ``actor``, ``creds`` and ``_peer()``."""

    broker: Any
    actor: Any
    creds: Any

    def _peer(self) -> Any:  # provided by BrokerProtocol
        raise NotImplementedError

    @wire.SendMany.responder
    def send_many(self, to: str, body: str, client_key: str | None = None) -> Deferred:
        """Send to every peer of a scope or group (as the unverified CLI when unbound)."""
        return self.broker.coordination.fanout.send(self.actor, to, body, client_key,
                                                    verified=self.creds.transport == "unix")

    @wire.JoinGroup.responder
    def join_group(self, name: str) -> Deferred:
        """Join a group; answers it with its members."""
        coordination = self.broker.coordination
        return coordination.groups.join(self._peer().id, name).addCallback(
            lambda members: {"group": {"name": name, "members": [coordination.member(i) for i in members]}})

    @wire.LeaveGroup.responder
    def leave_group(self, name: str) -> Deferred:
        """Leave a group."""
        return self.broker.coordination.groups.leave(self._peer().id, name).addCallback(lambda left: {"left": left})

    @wire.ListGroups.responder
    def list_groups(self) -> dict:
        """Every group with its members."""
        coordination = self.broker.coordination
        return {"groups": coordination.groups.listing(coordination.member)}

    @wire.ClaimPaths.responder
    def claim_paths(self, paths: Any, reason: str, ttl_seconds: float | None = None) -> Deferred:
        """Claim paths or globs of this peer's repository."""
        actor = self._peer()
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise wire.InvalidArgument("paths must be a list of strings")
        claims = self.broker.coordination.claims
        return claims.claim(actor.id, actor.record, paths, reason, ttl_seconds).addCallback(
            lambda made: {"claims": claims.wire(made)})

    @wire.ReleasePaths.responder
    def release_paths(self, paths: Any = None) -> Deferred:
        """End this peer's claims on ``paths`` (all when left out)."""
        actor = self._peer()
        if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
            raise wire.InvalidArgument("paths must be a list of strings, or left out to release every claim")
        return self.broker.coordination.claims.release(actor.id, actor.record, paths).addCallback(
            lambda result: {"released": result[0], "not_held": result[1]})

    @wire.ListClaims.responder
    def list_claims(self, repo: str | None = None) -> dict:
        """Every live claim (of one repository)."""
        claims = self.broker.coordination.claims
        return {"claims": claims.wire(claims.live(repo))}

    @wire.CheckPaths.responder
    def check_paths(self, repo: str, paths: Any) -> Deferred:
        """Live claims of other peers that cover these paths (for the pre-commit guard)."""
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise wire.InvalidArgument("paths must be a list of strings")
        exclude = self.actor.id if self.actor is not None else None
        return succeed({"conflicts": self.broker.coordination.claims.conflicts(repo, paths, exclude)})
