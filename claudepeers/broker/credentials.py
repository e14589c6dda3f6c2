"""Who is on the other end of a connection: the kernel's word on UNIX, a secret on TCP.

Small functions on purpose; the platform-specific reads (SO_PEERCRED, SO_PEERPIDFD, /proc)
are claudepeers.common.platforms' and are asked for here, nowhere else in the broker.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import select
import socket
from typing import Any

from claudepeers.common import agents

from claudepeers.common import platforms
from claudepeers.broker.naming import ID_ALPHABET
from claudepeers.broker.records import Credentials
from claudepeers.common.errors import IdentityRejected


def peer_credentials(transport: Any) -> Credentials:
    """The kernel's view of the other end: (pid, uid) and the process's start time on UNIX
    sockets; on TCP the client's address, whose owner the broker looks for when a claim
    comes. Read at accept, so that a later claim is checked against the process that
    connected, not whatever holds its pid by then."""
    try:
        handle = transport.getHandle()
    except AttributeError:
        return Credentials("tcp")
    if getattr(handle, "family", None) != socket.AF_UNIX:
        peer = transport.getPeer()
        return Credentials("tcp", address=(peer.host, peer.port) if hasattr(peer, "port") else None)
    try:
        pid, uid = platforms.peer_credentials(handle)
    except OSError:
        # The kernel would not say who it is: no uid, so the connection is refused.
        return Credentials("unix")
    start, ended = connecting_process_start(handle, pid)
    return Credentials("unix", pid=pid, uid=uid, start=start, ended=ended)


def connecting_process_start(handle: socket.socket, pid: int) -> tuple[float | None, bool]:
    """(start time, ended) of the process that connected ``handle`` as ``pid``.

    Where the kernel offers SO_PEERPIDFD, its pidfd names that very process: the start
    time read while the pidfd shows it alive is its own, even if it exits a moment later.
    Without it, the start time is read at once (the window is the accept latency).
    """
    pidfd = platforms.peer_pidfd(handle)
    try:
        start = agents.process_start(pid)
        if pidfd is not None and _pidfd_ended(pidfd):
            return None, True
    except OSError:  # out of descriptors: unconfirmed, so no claim of identity is accepted
        return None, True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return start, start is None


def _pidfd_ended(pidfd: int) -> bool:
    """A pidfd polls readable once its process has ended."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


class TcpSecrets:
    """Peers made over TCP, and the secret that lets a TCP connection resume (or Attach to) one.

    A peer a TCP registration creates gets its id from an HMAC of its session (host, agent
    pid and start) under a key of the broker's, so the broker can tell a TCP-made peer from a
    kernel-verified one (random id) without storing anything, across restarts. The secret, an
    HMAC of the peer id, is told only to TCP registrations of that peer. So a TCP client never
    binds to a peer registered over the UNIX socket (DESIGN 4, Security).
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def peer_id(self, host: str, agent_pid: int, agent_start: float, thread_id: str | None = None) -> str:
        """The id of the peer a TCP registration of this session creates (8 of ``[a-z0-9]``);
        a Codex thread is a session of its own (``thread_id``)."""
        session = f"peer:{host}:{agent_pid}:{round(agent_start * 100)}".encode()
        if thread_id is not None:
            session += f":{thread_id}".encode()
        number = int.from_bytes(hmac.new(self._key, session, hashlib.sha256).digest()[:8], "big")
        letters = []
        for _ in range(8):
            number, index = divmod(number, len(ID_ALPHABET))
            letters.append(ID_ALPHABET[index])
        return "".join(letters)

    def made(self, record: Any) -> bool:
        """Whether a peer was created by a TCP registration (its id is its session's HMAC)."""
        return record.id == self.peer_id(record.host, record.agent_pid, record.agent_start, record.thread_id)

    def secret(self, peer_id: str) -> str:
        """The secret of peer ``peer_id``."""
        return hmac.new(self._key, peer_id.encode(), hashlib.sha256).hexdigest()

    def check(self, creds: Credentials, actor: Any, secret: str | None) -> None:
        """Over TCP, binding to an existing peer needs its secret; IdentityRejected if not."""
        if creds.transport == "unix":
            return
        if not secret or not hmac.compare_digest(secret.encode(), self.secret(actor.id).encode()):
            raise IdentityRejected(
                f"this agent session is peer {actor.id} ({actor.name}); over TCP only a client holding the "
                "secret its own TCP registration received may resume or attach to it"
            )
