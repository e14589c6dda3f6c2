"""Turning the broker's JSON values (status, peers, events, messages) into terminal text.

Pure functions of plain data, so they are tested without a broker. They read fields
leniently (``id`` or ``peer_id``, ``online`` or ``state``) so that a newer broker adding
fields does not break an older CLI.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

#: client_type -> the tag shown in listings.
CLIENT_TAGS = {"claude-code": "[claude-code]", "codex": "[codex]", "cli": "[cli]"}


def peer_id(peer: Mapping[str, Any]) -> str:
    """The peer's id, whichever key carries it."""
    return str(peer.get("id") or peer.get("peer_id") or "?")


def client_tag(peer: Mapping[str, Any]) -> str:
    """``[claude-code]``, ``[codex]`` or ``[cli]`` (``[<type>]`` for anything else)."""
    kind = str(peer.get("client_type") or peer.get("client") or "unknown")
    return CLIENT_TAGS.get(kind, f"[{kind}]")


def peer_state(peer: Mapping[str, Any]) -> str:
    """``online``, ``offline`` or ``gone``."""
    state = peer.get("state")
    if isinstance(state, str) and state:
        return state
    return "online" if peer.get("online") else "offline"


def unread_count(peer: Mapping[str, Any]) -> int:
    """How many messages wait for this peer (0 when the broker did not say)."""
    try:
        return int(peer.get("unread") or peer.get("unread_count") or 0)
    except (TypeError, ValueError):
        return 0


def duration(seconds: float) -> str:
    """A short human duration: ``42s``, ``5m 3s``, ``2h 5m``, ``3d 4h``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def clock(when: Any) -> str:
    """A timestamp (epoch seconds) as local ``YYYY-MM-DD HH:MM:SS``; strings pass through."""
    if isinstance(when, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return str(when or "")


def one_line(text: Any, width: int = 0) -> str:
    """Collapse whitespace and control characters; cut to ``width`` with an ellipsis."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text or "")).split())
    if width and len(flat) > width:
        return flat[: max(0, width - 1)] + "…"
    return flat


def format_peer_line(peer: Mapping[str, Any]) -> str:
    """The one-line form used by ``peers``: tag, name, id, state, unread, cwd."""
    unread = unread_count(peer)
    parts = [
        client_tag(peer),
        str(peer.get("name") or "-"),
        f"({peer_id(peer)})",
        peer_state(peer),
    ]
    if unread:
        parts.append(f"{unread} unread")
    if peer.get("delivery") and peer_state(peer) == "online":
        parts.append(f"mail: {one_line(peer['delivery'], 80)}")
    parts.append(str(peer.get("cwd") or ""))
    line = "  ".join(p for p in parts if p)
    summary = one_line(peer.get("summary"), 100)
    return f"{line}\n    {summary}" if summary else line


def format_peer_block(peer: Mapping[str, Any]) -> str:
    """The multi-line form used by ``status``: every field an operator wants to see."""
    lines = [f"{client_tag(peer)} {peer.get('name') or '-'}  ID: {peer_id(peer)}  {peer_state(peer)}"]
    lines.append(f"    cwd: {peer.get('cwd') or '-'}")
    extra = []
    if peer.get("branch"):
        extra.append(f"branch {peer['branch']}")
    if peer.get("pid"):
        extra.append(f"pid {peer['pid']}")
    if peer.get("host"):
        extra.append(f"host {peer['host']}")
    if extra:
        lines.append("    " + ", ".join(extra))
    lines.append(f"    summary: {one_line(peer.get('summary'), 200) or '-'}")
    lines.append(f"    unread: {unread_count(peer)}")
    if peer.get("delivery"):
        lines.append(f"    mail: {one_line(peer['delivery'], 200)}")
    return "\n".join(lines)


def format_peers(peers: Iterable[Mapping[str, Any]]) -> str:
    """The ``peers`` listing, or a line saying there are none."""
    peers = list(peers)
    if not peers:
        return "No peers."
    return "\n".join(format_peer_line(p) for p in peers)


def _tcp_text(tcp: Any) -> str:
    if isinstance(tcp, Mapping):
        if not tcp.get("enabled", True):
            return "off"
        host = tcp.get("host") or "127.0.0.1"
        return f"on ({host}:{tcp.get('port')})" if tcp.get("port") else "on"
    if tcp in (None, False, 0, ""):
        return "off"
    if tcp is True:
        return "on"
    if isinstance(tcp, str):
        return f"on ({tcp})"
    return f"on (port {tcp})"


def uptime_seconds(status: Mapping[str, Any], now: float | None = None) -> float | None:
    """The broker's uptime from ``uptime`` or ``started_at``, if it says."""
    for key in ("uptime", "uptime_seconds"):
        if isinstance(status.get(key), (int, float)):
            return float(status[key])
    started = status.get("started_at") or status.get("started")
    if isinstance(started, str):
        started = _parse_iso(started)
    if isinstance(started, (int, float)):
        return (time.time() if now is None else now) - float(started)
    return None


def _parse_iso(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_status(status: Mapping[str, Any], now: float | None = None) -> str:
    """The ``status`` report: broker health, then one block per peer."""
    uptime = uptime_seconds(status, now)
    peers = list(status.get("peers") or [])
    online = sum(1 for p in peers if peer_state(p) == "online")
    lines = [
        f"Broker: running, version {status.get('version', '?')}, pid {status.get('pid', '?')}"
        + (f", up {duration(uptime)}" if uptime is not None else ""),
        f"  socket:   {status.get('socket') or status.get('socket_path') or '?'}",
        f"  database: {status.get('db') or status.get('db_path') or status.get('database') or '?'}",
        f"  tcp:      {_tcp_text(status.get('tcp'))}",
    ]
    if status.get("manhole"):
        lines.append(f"  manhole:  {status['manhole']}")
    storage = status.get("storage") or {}
    for problem in storage.get("problems") or []:  # the database gone, replaced, damaged at start
        lines.append(f"  STORAGE PROBLEM: {problem}")
    for cause in storage.get("writes_failing") or []:
        lines.append(f"  STORAGE PROBLEM: database writes are failing: {cause}")
    if status.get("host"):
        lines.append(f"  host:     {status['host']}")
    from claudepeers.cli.hosts import format_hosts

    lines += format_hosts(status)
    unread = sum(unread_count(p) for p in peers)
    gone = sum(1 for p in peers if peer_state(p) == "gone")
    lines.append(
        f"Peers: {len(peers)} ({online} online, {len(peers) - online - gone} offline, {gone} gone), "
        f"{unread} unread"
    )
    for peer in peers:
        lines.append(format_peer_block(peer))
    return "\n".join(lines)


def format_event(event: Mapping[str, Any]) -> str:
    """One ``log`` line: time, kind, peer, detail, then any other fields as key=value."""
    when = clock(event.get("at") or event.get("time"))
    kind = str(event.get("kind") or event.get("type") or "event")
    shown = {"at", "time", "kind", "type", "peer_id", "detail", "id", "event_id"}
    parts = [when, f"{kind:<8}", str(event.get("peer_id") or "-"), one_line(event.get("detail"))]
    rest = " ".join(
        f"{key}={one_line(value, 80)}"
        for key, value in sorted(event.items())
        if key not in shown and value not in (None, "")
    )
    return "  ".join(p for p in [*parts, rest] if p)


def format_messages(messages: Iterable[Mapping[str, Any]]) -> str:
    """The ``inbox`` listing: one framed block per stored message, oldest first."""
    blocks = []
    for msg in messages:
        sender = msg.get("from_name") or msg.get("from_id") or "?"
        state = msg.get("state") or ("read" if msg.get("acknowledged") else "unread")
        when = clock(msg.get("sent_at") or msg.get("created_at") or msg.get("at"))
        head = f"#{msg.get('id', msg.get('message_id', '?'))}  {when}  from {sender}"
        if msg.get("from_id") and msg.get("from_id") != sender:
            head += f" ({msg['from_id']})"
        blocks.append(f"{head}  [{state}]\n{msg.get('body') or msg.get('text') or ''}")
    return "\n\n".join(blocks) if blocks else "No stored messages."
