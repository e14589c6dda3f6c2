"""What the operator's views (Status, Inbox, RecentEvents, Watch) show over TCP.

The operator is whoever holds the UNIX socket: same uid, vouched for by the kernel, so
these views show every peer there. A TCP client holds only the token, which a sandboxed
agent is given, so it sees what concerns its own registered peer: its status line, its
own inbox, the events about it. Anything else is a clear PermissionDenied (DESIGN 4,
Security); a status says that it is partial.
"""

from __future__ import annotations

from typing import Any

from ..common.errors import PeersError, PermissionDenied

#: The broker-wide fields of a status a TCP client gets (health, not other peers' data).
TCP_STATUS_FIELDS = ("version", "pid", "host", "started_at", "uptime_seconds", "socket", "database", "tcp", "limits")
#: Shown in a TCP client's status, so that a person reading it knows it is partial.
TCP_VIEW = "over TCP: your own peer only (the operator's full view needs the UNIX socket)"


def over_tcp(creds: Any) -> bool:
    """Whether the connection is one the kernel does not vouch for."""
    return creds.transport != "unix"


def own_peer(creds: Any, actor: Any, view: str) -> Any:
    """The TCP client's own peer, or PermissionDenied naming the view it asked for."""
    if actor is None:
        raise PermissionDenied(
            f"{view} over TCP shows only your own peer: register first "
            "(the operator's view of every peer needs the UNIX socket)")
    return actor


def status(broker: Any, creds: Any, actor: Any) -> dict[str, Any]:
    """The whole status on the socket; over TCP the broker's health and the caller's own
    peer (none before it registers: ``claude-peers status`` over TCP still says the broker runs)."""
    full = broker.status()
    if not over_tcp(creds):
        return full
    peers = [peer for peer in full["peers"] if actor is not None and peer.get("id") == actor.id]
    shown = {key: full[key] for key in TCP_STATUS_FIELDS if key in full}
    shown.update(peers=peers, unread=actor.unread if actor is not None else 0, view=TCP_VIEW)
    for state in ("online", "offline", "gone"):
        shown[state] = sum(1 for peer in peers if peer.get("state") == state)
    return shown


def check_inbox(broker: Any, creds: Any, actor: Any, target: str) -> None:
    """Over TCP only the caller's own inbox may be read; PermissionDenied otherwise."""
    if not over_tcp(creds):
        return
    me = own_peer(creds, actor, "inbox")
    try:
        wanted = broker.resolve(target, allow_gone=True, caller=me)
    except PeersError:  # unknown or ambiguous: not the caller's own, whoever it names
        wanted = None
    if wanted is not me:
        raise PermissionDenied(
            f"over TCP you may read only your own inbox ({me.name}, {me.id}); "
            "another peer's mail needs the UNIX socket")


def concerns(event: dict[str, Any], peer_id: str) -> bool:
    """An event about ``peer_id``: its own, or a message to it."""
    return event.get("peer_id") == peer_id or event.get("to_id") == peer_id


def events_for(creds: Any, actor: Any, view: str) -> str | None:
    """The peer id a connection's events are limited to (None: every event, the socket)."""
    if not over_tcp(creds):
        return None
    return own_peer(creds, actor, view).id
