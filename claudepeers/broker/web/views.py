"""What the page shows, as plain JSON-ready values read from the live broker.

The page gets one ``state`` (everything) when it connects and smaller updates after that
(stream.py). Peers are shown by host and repository; each carries what ``claude-peers
status`` shows plus, when the broker has them, the coordination fields (``groups``,
``claims``: ``{pattern, reason, expires_at}``) that the page renders as they appear. A
line of the flow carries ``thread_id`` when the broker's event names one; with a broker
that keeps threads (``broker.threads``) every line opens the thread of its message.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet.defer import Deferred

from claudepeers.broker.records import GONE, OFFLINE, ONLINE, iso

#: Flow items and other events the first ``state`` carries.
RECENT_FLOW = 100
RECENT_LOG = 50
RECENT_KILLS = 20
#: Messages of a thread shown at once.
THREAD_PAGE = 100

_ORDER = {ONLINE: 0, OFFLINE: 1, GONE: 2}


def peer_view(broker: Any, actor: Any) -> dict[str, Any]:
    """One peer as the page shows it (a record's wire form, its unread count and delivery),
    with its groups and claims where the broker keeps them (DESIGN 8: ``coordination``
    annotates a listed peer with ``groups`` and ``claims``)."""
    view = {**actor.record.to_wire(actor.unread), "delivery": actor.delivery,
            "repo": actor.record.git_root or actor.record.cwd}
    coordination = getattr(broker, "coordination", None)
    return coordination.annotate(view) if coordination is not None else view


def peers_view(broker: Any, views: "PeerViews | None" = None) -> list[dict[str, Any]]:
    """Every known peer, by host, repository, state and name (``views`` reuses the view of
    a peer whose record, unread count and delivery are unchanged)."""
    actors = sorted(broker.actors.values(), key=lambda a: (a.record.host, a.record.git_root or a.record.cwd,
                                                           _ORDER.get(a.state, 3), a.name))
    if views is None:
        return [peer_view(broker, actor) for actor in actors]
    return [views.view(broker, actor) for actor in actors]


class PeerViews:
    """The last view of each peer, rebuilt only when the peer changed: the stream writes the
    peers up to ten times a second under traffic, and a record's wire form (``asdict``) is
    most of that work. Records are frozen and replaced on change, so identity says enough."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[Any, int, str, dict[str, Any]]] = {}

    def view(self, broker: Any, actor: Any) -> dict[str, Any]:
        """The page's view of ``actor`` (with groups and claims when the broker keeps them)."""
        kept = self._views.get(actor.id)
        if kept is not None and kept[0] is actor.record and kept[1] == actor.unread and kept[2] == actor.delivery:
            base = kept[3]
        else:
            base = {**actor.record.to_wire(actor.unread), "delivery": actor.delivery,
                    "repo": actor.record.git_root or actor.record.cwd}
            if len(self._views) > 2 * len(broker.actors) + 16:  # ended peers' views go
                self._views = {key: value for key, value in self._views.items() if key in broker.actors}
            self._views[actor.id] = (actor.record, actor.unread, actor.delivery, base)
        coordination = getattr(broker, "coordination", None)
        return coordination.annotate(dict(base)) if coordination is not None else base


def health_view(broker: Any) -> dict[str, Any]:
    """Uptime, commits and queue depth: the broker's health line."""
    store = broker.store
    actors = broker.actors.values()
    health = broker.health()
    return {
        **health,
        "uptime_seconds": round(health["uptime_seconds"], 1),
        "commits": store.batches,
        "writes": store.batched_writes,
        # Writes waiting for the next group commit, and messages waiting to be pushed.
        "queued_writes": store.queued_writes,
        "queued_pushes": sum(a.queued for a in actors),
        "threads": getattr(broker, "threads", None) is not None,
    }


def flow_item(broker: Any, event: dict[str, Any]) -> dict[str, Any]:
    """A ``message`` event as one line of the flow: sender -> recipient, outcome, thread."""
    detail = event.get("detail", "")
    names, _, status = detail.rpartition(": ")
    from_name, _, to_name = names.partition(" -> ")
    sender = broker.actors.get(event.get("peer_id"))
    recipient = broker.actors.get(event.get("to_id"))
    item = {
        "seq": event.get("seq"), "at": event.get("at"), "message_id": event.get("message_id"),
        "from_id": event.get("peer_id"), "from_name": sender.name if sender is not None else from_name,
        "to_id": event.get("to_id"), "to_name": recipient.name if recipient is not None else to_name,
        "status": status,
    }
    for key in ("thread_id", "reply_to"):
        if event.get(key) is not None:
            item[key] = event[key]
    return item


def shown(event: dict[str, Any]) -> dict[str, Any]:
    """A raw event of the log (time as a number) with its time as an ISO string."""
    return {**event, "at": iso(event["at"])} if not isinstance(event.get("at"), str) else event


def log_item(event: dict[str, Any]) -> dict[str, Any]:
    """Any other event (join, leave, gone, kill, rename, broker) as one line."""
    return {key: event.get(key) for key in ("seq", "at", "kind", "peer_id", "detail", "outcome")}


def split_events(broker: Any, events: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events (times already ISO strings) as (flow items, log items), in order."""
    flow, other = [], []
    for event in events:
        if event.get("kind") == "message":
            flow.append(flow_item(broker, event))
        else:
            other.append(log_item(event))
    return flow, other


def kills_view(broker: Any) -> Deferred:
    """The kill audit, newest first (a read of the store): fires with a list."""

    def shaped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**row, "at": iso(row["at"])} for row in rows]

    return broker.store.kills(RECENT_KILLS).addCallback(shaped)


def state_view(broker: Any) -> Deferred:
    """Everything the page shows when it connects: fires with a dict."""
    flow, other = split_events(broker, broker.events.recent(1000))

    def complete(kills: list[dict[str, Any]]) -> dict[str, Any]:
        return {"health": health_view(broker), "peers": peers_view(broker), "flow": flow[-RECENT_FLOW:],
                "log": other[-RECENT_LOG:], "kills": kills}

    return kills_view(broker).addCallback(complete)


def thread_view(broker: Any, message_id: int) -> Deferred:
    """The whole thread of a message (the operator's view, as the CLI's), oldest first."""

    def shaped(thread: dict[str, Any]) -> dict[str, Any]:
        items = [{"at": m.get("sent_at"), "message_id": m.get("id"), "from_id": m.get("from_id"),
                  "from_name": m.get("from_name"), "to_id": m.get("to_id"), "to_name": m.get("to_name"),
                  "status": "shown" if m.get("acked_at") else "queued", "body": m.get("body"),
                  "thread_id": thread.get("thread_id"), "reply_to": m.get("reply_to")}
                 for m in thread.get("messages", [])]
        return {"thread_id": thread.get("thread_id"), "items": items, "more": thread.get("more", 0)}

    return broker.threads.read_thread(None, message_id, None, THREAD_PAGE).addCallback(shaped)
