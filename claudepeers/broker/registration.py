"""Registration: a connection claims an agent session and becomes (or resumes) its peer.

The claim is checked first (sessions.py: well formed, and the claimed agent is the
connecting process's); then the session's peer is found in the directory or made, named
uniquely, bound to the connection when it takes pushes, and saved before the answer.
Over TCP only a TCP-made peer resumes, with its secret; over the socket, a TCP-made peer of
the session ends and the kernel-verified claim gets a peer of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from claudepeers.broker import naming, sessions
from claudepeers.broker.records import GONE, OFFLINE, Claim, Credentials, PeerRecord
from claudepeers.broker.sessions import NO_PUSHES
from claudepeers.common.errors import IdentityRejected

if TYPE_CHECKING:
    from claudepeers.broker.peers import PeerActor


class Registration:
    """Registers connections as the peers of their agent sessions (``Broker.register``)."""

    log = Logger()

    # ``broker`` is core.Broker, typed Any: core imports this module, not the other way round.
    def __init__(self, broker: Any, processes: Any) -> None:
        self._broker = broker
        self._processes = processes

    @inlineCallbacks
    def register(self, connection: Any, creds: Credentials, claim: Claim) -> Any:
        """Create or resume the peer of ``claim``'s agent session and bind ``connection``.

        Fires with (actor, resumed).
        """
        sessions.check_claim(claim)
        agent_pid, agent_start = self._broker.verify_session(creds, claim.agent_pid, claim.agent_start)
        if (agent_pid, agent_start) != (claim.agent_pid, claim.agent_start):
            claim = replace(claim, agent_pid=agent_pid, agent_start=agent_start)
        now = self._broker.now()
        actor = self._session_for(creds, claim)
        resumed = actor is not None
        fields = dict(
            client_type=claim.client_type, cwd=claim.cwd, git_root=claim.git_root,
            git_common_dir=claim.git_common_dir, branch=claim.branch, tty=claim.tty, repo_id=claim.repo_id,
        )
        if actor is None:
            name = self._broker._unique_name(claim.name or naming.default_name(claim.git_root, claim.cwd), exclude=None, strict=bool(claim.name))
            record = PeerRecord(
                id=self._new_id(creds, claim), host=self._broker.host, agent_pid=claim.agent_pid, agent_start=claim.agent_start,
                name=name, summary="", state=OFFLINE, registered_at=now, last_seen=now, thread_id=claim.thread_id,
                **fields,
            )
            actor = self._broker._actor(record)
            self._broker.directory.add(actor)
        else:
            if claim.name and claim.name != actor.name:
                fields["name"] = self._broker._unique_name(claim.name, exclude=actor.id, strict=True)
            elif actor.state == GONE:  # a revived thread: its name may have been taken meanwhile
                fields["name"] = self._broker._unique_name(actor.name, exclude=actor.id, strict=False)
            actor.update(**fields)
        if claim.delivery != NO_PUSHES:
            connection.delivery = claim.delivery
            actor.attach(connection, now)
            actor.bridge_pid = creds.pid
        yield self._broker.store.save_peer(actor.record)
        self._broker.emit(
            "register", actor.id,
            f"{actor.name} [{claim.client_type}] {'reconnected' if resumed else 'joined'} in {claim.cwd}",
            name=actor.name,
        )
        return (actor, resumed)

    def _session_for(self, creds: Credentials, claim: Claim) -> PeerActor | None:
        """The peer a registration resumes. Over TCP only a TCP-made peer, with its secret; over
        the socket, a TCP-made peer of the session ends (the kernel-verified claim wins, and a
        TCP client holding its secret must not take the session back) and a new one starts."""
        actor = self._broker.session(claim.agent_pid, claim.agent_start, claim.thread_id, revive=True)
        if actor is None:
            return None
        made_over_tcp = self._broker.tcp_secrets.made(actor.record)
        if creds.transport != "unix":
            if not made_over_tcp:
                raise IdentityRejected(f"this agent session is peer {actor.id} ({actor.name}), registered over the "
                                       "UNIX socket; a TCP client cannot register as it")
            self._broker.tcp_secrets.check(creds, actor, claim.secret)
            return actor
        if made_over_tcp:
            self.log.info("peer {peer} made over TCP ends: its agent session registered over the socket", peer=actor.id)
            self._broker._gone(actor)
            return None
        return actor

    def _new_id(self, creds: Credentials, claim: Claim) -> str:
        """A new peer's id: random over the socket (unique across the network), an HMAC of the
        session over TCP (so the broker tells a TCP-made peer after a restart)."""
        if creds.transport == "unix":
            return naming.new_id(self._broker.actors.keys() | (self._broker.network.remote.keys() if self._broker.network else set()))
        peer_id = self._broker.tcp_secrets.peer_id(self._broker.host, claim.agent_pid, claim.agent_start, claim.thread_id)
        if peer_id in self._broker.actors:  # an ended peer of the same session (or a 1 in 36^8 chance)
            raise IdentityRejected(f"agent pid {claim.agent_pid}'s session already had peer {peer_id}")
        return peer_id
