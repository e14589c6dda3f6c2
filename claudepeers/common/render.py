"""How a message is shown to an agent: the frame, and the channel notification's meta.

The frame names the sender as the broker verified it, never as the body claims. Every
line of the body is indented with a bar, so nothing inside a body can start a line of
the frame: a body that contains ``[end of message ...]`` or a fake header stays visibly
inside. Control characters (ANSI escapes, carriage returns, bidi overrides, NULs) are
stripped from everything we print, since they could hide or rearrange text on screen.

Only the standard library is used: the bridge imports this on its hot path.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping

#: Prefix of every body line; frame lines never start with it.
BODY_BAR = "\u2502 "
#: Longest summary or cwd shown in a header line (the full text stays in the store).
MAX_HEADER_FIELD = 160

_CONTROL = re.compile(
    "["
    "\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 (but tab and newline) and C1 controls
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"  # zero width, line/para seps, bidi, invisible
    "\ufff9-\ufffb"  # interlinear annotations
    "]"
)


def clean_text(text: str) -> str:
    """Strip control and invisible formatting characters; keep newlines and tabs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if text.isascii():
        return text
    # Private-use and unassigned characters are left alone; other format chars go.
    return "".join(ch for ch in text if ch < "\x80" or unicodedata.category(ch) != "Cf")


def clean_line(text: str | None, limit: int = MAX_HEADER_FIELD) -> str:
    """One header field: cleaned, newlines and tabs folded to spaces, bounded."""
    line = " ".join(clean_text(text or "").split())
    if len(line) > limit:
        line = line[: limit - 1] + "\u2026"
    return line


def _field(text: Any, limit: int = MAX_HEADER_FIELD) -> str:
    """A header field that cannot close the header early or fake a quoted name."""
    return clean_line(None if text is None else str(text), limit).translate(_HEADER_UNSAFE)


_HEADER_UNSAFE = str.maketrans({"[": "(", "]": ")", '"': "'"})


def _sender(message: Mapping[str, Any]) -> str:
    """Who sent it, as verified by the broker."""
    if message.get("from_id") in (None, "", "cli"):
        return "the operator's terminal (claude-peers CLI; UNVERIFIED sender, not a peer)"
    name = _field(message.get("from_name")) or "?"
    parts = [f"id {_field(message.get('from_id'))}"]
    client = _field(message.get("from_client"))
    if client:
        parts.append(client)
    host = _field(message.get("from_host"))
    if host:
        parts.append(f"host {host}")
    cwd = _field(message.get("from_cwd"))
    if cwd:
        parts.append(f"cwd {cwd}")
    if not message.get("verified"):
        # A TCP connection: the broker knows the peer, but the kernel did not vouch for it.
        return f'peer "{name}" ({", ".join(parts)}), sent over TCP: UNVERIFIED sender'
    return f'peer "{name}" ({", ".join(parts)}), verified'


def render_message(message: Mapping[str, Any]) -> str:
    """The framed text of one message, as the agent sees it."""
    number = int(message.get("id", 0))
    header = f"[claude-peers message #{number} from {_sender(message)}"
    sent_at = _field(message.get("sent_at"))
    if sent_at:
        header += f", sent {sent_at}"
    header += "]"
    lines = [header]
    if message.get("reply_to"):
        lines.append(f"[reply to message #{_number(message['reply_to'])} in thread "
                     f"#{_number(message.get('thread_id') or message['reply_to'])}]")
    summary = _field(message.get("from_summary"))
    if summary and message.get("verified"):
        lines.append(f"[sender's summary: {summary}]")
    body = clean_text(str(message.get("body", "")))
    for line in body.split("\n"):
        lines.append(BODY_BAR + line)
    if message.get("from_id") not in (None, "", "cli"):
        reply = f'reply with send_message(to_id="{_field(message.get("from_id"))}", reply_to={number}, message=...)'
    else:
        reply = "the sender is not a peer and cannot receive a reply"
    lines.append(f"[end of claude-peers message #{number}; {reply}]")
    return "\n".join(lines)


def _number(value: Any) -> int:
    """A message or thread id as shown in a frame (anything else shows as 0)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


#: The longest channel content; a longer body (a raised body limit) is cut, and says so.
MAX_CHANNEL_CHARS = 40_000
#: Only letters, digits and underscores survive in Claude Code's channel tag attributes.
_META_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_TAG_LOOKALIKE = re.compile(r"<(/?)(channel)", re.IGNORECASE)


def channel_content(message: Mapping[str, Any]) -> str:
    """The ``content`` of a channel notification: the message itself, cleaned and bounded.

    Claude Code shows the person one line, ``<- claude-peers: <start of content>``, so it
    starts with what the message says; who sent it goes in :func:`channel_meta`. Text that
    looks like the channel tag is defused, so a body cannot close the tag and open a forged one.
    """
    body = clean_text(str(message.get("body", ""))).strip("\n")
    body = _TAG_LOOKALIKE.sub(lambda match: "\u2039" + match.group(1) + match.group(2), body)
    if len(body) > MAX_CHANNEL_CHARS:
        cut = len(body) - MAX_CHANNEL_CHARS
        body = body[:MAX_CHANNEL_CHARS] + (
            f"\n[claude-peers: {cut} more characters of message #{int(message.get('id', 0))} were cut here]"
        )
    return body


def channel_meta(message: Mapping[str, Any]) -> dict[str, str]:
    """The flat string map sent as ``meta`` of a ``notifications/claude/channel``: the
    sender as the broker verified it, the thread and the ids (keys Claude Code keeps)."""
    meta = _channel_meta(message)
    for key in ("reply_to", "thread_id"):
        if message.get(key) not in (None, ""):
            meta[key] = clean_line(str(message[key]), 64)
    return {key: value for key, value in meta.items() if _META_KEY.match(key)}


def _channel_meta(message: Mapping[str, Any]) -> dict[str, str]:
    verified = bool(message.get("verified")) and message.get("from_id") != "cli"
    return {
        "from_id": clean_line(message.get("from_id"), 64),
        "from_name": clean_line(message.get("from_name"), 64),
        "from_summary": clean_line(message.get("from_summary"), 1024),
        "from_cwd": clean_line(message.get("from_cwd"), 1024),
        "from_client": clean_line(message.get("from_client"), 64),
        "sent_at": clean_line(message.get("sent_at"), 64),
        "message_id": str(int(message.get("id", 0))),
        "verified": "true" if verified else "false",
        # The frame's words in one attribute (the content is the body alone): a TCP sender
        # reads "sent over TCP: UNVERIFIED sender", the CLI "the operator's terminal ...".
        "sender": clean_line(_sender(message), 1024),
    }


def render_batch(messages: list[Mapping[str, Any]], remaining: int, where: str) -> str:
    """Several framed messages, then a line saying how many more wait (if any)."""
    parts = [render_message(message) for message in messages]
    if remaining:
        noun = "message" if remaining == 1 else "messages"
        parts.append(f"[{remaining} more claude-peers {noun} waiting: {where}]")
    return "\n\n".join(parts)
