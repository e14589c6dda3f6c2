"""What the views of the broker show: the peers of a scope (ListPeers), the broker's health
and status, and what the operator's views (Status, Inbox, RecentEvents, Watch) show over TCP.

The operator is whoever holds the UNIX socket: same uid, vouched for by the kernel, so
these views show every peer there. A TCP client holds only the token, which a sandboxed
agent is given, so it sees what concerns its own registered peer: its status line, its
own inbox, the events about it. Anything else is a clear PermissionDenied (DESIGN 4,
Security); a status says that it is partial.
"""

from __future__ import annotations

import os
from typing import Any

from claudepeers import __version__
from claudepeers.broker.records import GONE, OFFLINE, ONLINE, PeerRecord, iso
from claudepeers.common.errors import InvalidArgument, NotRegistered, PeersError, PermissionDenied

SCOPES = ("machine", "directory", "repo", "network")
#: Peers are listed online first, then offline, then gone; by name within each.
_STATE_ORDER = {ONLINE: 0, OFFLINE: 1, GONE: 2}

#: The broker-wide fields of a status a TCP client gets (health, not other peers' data).
TCP_STATUS_FIELDS = ("version", "pid", "host", "started_at", "uptime_seconds", "socket", "database", "tcp", "limits")
#: Shown in a TCP client's status, so that a person reading it knows it is partial.
TCP_VIEW = "over TCP: your own peer only (the operator's full view needs the UNIX socket)"


def list_peers(broker: Any, caller: Any, scope: str, include_offline: bool = True) -> list[dict[str, Any]]:
    """Live peers in ``scope`` as wire dicts (offline ones unless told not), never the caller."""
    if scope not in SCOPES:
        raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if scope not in ("machine", "network") and caller is None:
        raise NotRegistered(f"scope {scope!r} needs a registered peer; use scope 'machine'")
    chosen = []
    for actor in broker.actors.values():
        if actor is caller or actor.state == GONE or (actor.state == OFFLINE and not include_offline):
            continue
        if scope == "directory" and actor.record.cwd != caller.record.cwd:  # type: ignore[union-attr]
            continue
        if scope == "repo" and repo_key(actor.record) != repo_key(caller.record):  # type: ignore[union-attr]
            continue
        chosen.append(actor)
    chosen.sort(key=lambda a: (_STATE_ORDER[a.state], a.name))
    listed = [broker.coordination.annotate(with_delivery(a)) for a in chosen]
    if broker.network is not None and scope in ("network", "repo"):
        listed += broker.network.listed(scope, caller, include_offline)
    return listed


def health(broker: Any) -> dict[str, Any]:
    """Who and how long this broker is, its peers counted by state, and its counters:
    the part `status` and the dashboard's health line share."""
    states = [actor.state for actor in broker.actors.values()]
    return {
        "version": __version__,
        "pid": os.getpid(),
        "host": broker.host,
        "started_at": iso(broker.started_at),
        "uptime_seconds": round(broker.now() - broker.started_at, 3),
        "online": states.count(ONLINE),
        "offline": states.count(OFFLINE),
        "gone": states.count(GONE),
        "unread": sum(actor.unread for actor in broker.actors.values()),
        "counters": dict(broker.counters),
    }


def full_status(broker: Any) -> dict[str, Any]:
    """Health and every known peer, for `claude-peers status` on the socket."""
    peers = sorted(broker.actors.values(), key=lambda a: (_STATE_ORDER[a.state], a.name))
    store, limits = broker.store, broker.limits
    return {
        **broker.info,
        **health(broker),
        "peers": [broker.coordination.annotate({**with_delivery(a), "rewake_pid": a.waits.waiter_pid}) for a in peers],
        # Group commits so far and the writes they carried (writes per commit shows the batching).
        "store": {"commits": store.batches, "writes": store.batched_writes},
        # The database file's health and size (storage/guard.py), when a guard watches it.
        "storage": store.guard.status() if getattr(store, "guard", None) else {},
        "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__},
        **(broker.network.status() if broker.network is not None else {}),
    }


def with_delivery(actor: Any) -> dict[str, Any]:
    """A peer as listed: its record, unread count and how it gets its mail."""
    return {**actor.record.to_wire(actor.unread), "delivery": actor.delivery}


def repo_key(record: PeerRecord) -> str:
    """What makes two peers one repository's: the common git dir (worktrees share it), else the cwd."""
    return record.git_common_dir or record.cwd


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
