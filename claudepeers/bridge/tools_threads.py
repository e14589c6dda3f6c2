"""The MCP tools of threads: ``wait_for_reply``, ``read_thread``, ``search_messages``.

Their schemas join :data:`.tool_schemas.TOOLS`; :class:`~.tools.PeerTools` finds the
``_tool_*`` methods of a :class:`ThreadTools` it is given.

``wait_for_reply`` blocks the tool call until the broker answers ``WaitForReply`` (a reply
arriving answers it: nothing polls). Its deadline is the wait itself plus the bridge's
usual call deadline. A broker that goes away during the wait is asked again once the
bridge has reconnected, for the time that is left. A reply it returns is shown to the
agent in its result and acknowledged, so it is never shown again; one that another path
showed first (a channel push, a tool result) is named, not repeated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Mapping

from claudepeers.common.render import BODY_BAR, clean_line, clean_text, render_message
from claudepeers.wire import commands as wire

from claudepeers.bridge.broker_calls import BrokerUnreachable, ToolResult

#: How long wait_for_reply waits unless told (below Codex's default tool timeout of 60 s).
DEFAULT_WAIT_SECONDS = 50.0
#: Text of a history answer (within what an agent takes in one tool result).
HISTORY_CHARS = 60_000
#: Characters of a body shown per search hit (read_thread shows the whole message).
SEARCH_PREVIEW_CHARS = 300

_ID = {"type": "integer", "minimum": 1}
THREAD_TOOLS: dict[str, dict[str, Any]] = {
    "wait_for_reply": {
        "description": (
            "Wait until a reply to one of your messages arrives, then return it (the call blocks; "
            "nothing polls). message_id: the # of the message you sent (send_message says it) or "
            "of the latest reply; the wait returns the replies that came after it in its thread. "
            "timeout_seconds: how long to wait (default 50; the broker's bound, 600 unless "
            "changed, is the most; Codex ends a tool call after its tool_timeout_sec, 60 s by "
            "default). A reply returned here is not shown to you again."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "message_id": {**_ID, "description": "the message whose reply you wait for"},
                "timeout_seconds": {"type": "number", "minimum": 0, "description": "seconds to wait (default 50)"},
            },
            "required": ["message_id"],
            "additionalProperties": False,
        },
    },
    "read_thread": {
        "description": (
            "Read back a thread of your own mail: the messages you sent or received in it, oldest "
            "first. thread_id: the thread's id or the id of any message in it. before (optional): "
            "show only messages older than this id (to page back)."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "thread_id": {**_ID, "description": "a thread id or any message id in the thread"},
                "before": {**_ID, "description": "only messages with a smaller id (optional)"},
            },
            "required": ["thread_id"],
            "additionalProperties": False,
        },
    },
    "search_messages": {
        "description": (
            "Search your own mail (sent and received) for messages containing every word of text "
            "(a word also matches longer words that begin with it); newest first, at most 20. "
            "Read a whole conversation with read_thread."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1, "description": "the words to look for"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    },
}


class ThreadTools:
    """The thread tools of one bridge.

    ``link`` is the bridge's :class:`~.connection.BrokerLink`; ``inbox`` its
    :class:`~.delivery.Inbox`; ``shown(ids)`` marks messages shown in a tool result (and
    acknowledges them).
    """

    def __init__(self, link: Any, inbox: Any, shown: Callable[[list[int]], None]) -> None:
        self._link = link
        self._inbox = inbox
        self._shown = shown
        self._margin = link.call_timeout

    async def _call(self, command: type, deadline: float | None = None, **arguments: Any) -> dict[str, Any]:
        """One broker call from asyncio code, with its own deadline if given."""
        return await self._link.call(command, deadline=deadline, **arguments).asFuture(asyncio.get_running_loop())

    async def _tool_wait_for_reply(self, message_id: int, timeout_seconds: float = DEFAULT_WAIT_SECONDS) -> ToolResult:
        end = time.monotonic() + timeout_seconds
        while True:
            remaining = max(0.0, end - time.monotonic())
            try:
                answer = await self._call(wire.WaitForReply, deadline=remaining + self._margin,
                                          message_id=message_id, timeout_seconds=remaining)
                break
            except BrokerUnreachable:
                # The broker restarted (or the link dropped): ask again once reconnected.
                remaining = end - time.monotonic()
                if remaining <= 0 or not await wait_until_ready(self._link, remaining):
                    raise
        return ToolResult(self._replies_text(answer, message_id, timeout_seconds))

    def _replies_text(self, answer: Mapping[str, Any], message_id: int, timeout: float) -> str:
        thread = int(answer.get("thread_id") or message_id)
        show, elsewhere = [], []
        for message in answer.get("messages") or []:
            mid = int(message["id"])
            # Shown by another path a moment ago, or carried by a channel notification now.
            (elsewhere if mid in self._inbox.shown or self._inbox.is_pending(mid) else show).append(message)
        self._shown([int(m["id"]) for m in show])
        parts = []
        if show:
            noun = "reply" if len(show) == 1 else "replies"
            parts.append(f"{len(show)} {noun} in thread #{thread}:\n\n" + "\n\n".join(render_message(m) for m in show))
        before = [*(answer.get("shown_before") or []), *elsewhere]
        if before:
            named = ", ".join(f"#{int(m['id'])} from {clean_line(m.get('from_name'))}" for m in before)
            parts.append(f"Already shown to you (not repeated here): {named}.")
        latest = max([int(m["id"]) for m in [*show, *before]], default=0)
        if not parts:
            if answer.get("outcome") != "timeout":
                return f"The replies in thread #{thread} were shown to you already."
            return (f"No reply in thread #{thread} within {timeout:g} s. A reply still reaches you as a "
                    f"message when it comes; call wait_for_reply(message_id={message_id}) to wait again.")
        parts.append(f"To wait for the next reply in this thread, call wait_for_reply(message_id={latest}).")
        return "\n\n".join(parts)

    async def _tool_read_thread(self, thread_id: int, before: int | None = None) -> ToolResult:
        arguments: dict[str, Any] = {"thread_id": thread_id}
        if before is not None:
            arguments["before"] = before
        answer = await self._call(wire.ReadThread, **arguments)
        messages = answer.get("messages") or []
        thread = int(answer.get("thread_id") or thread_id)
        if not messages:
            return ToolResult(f"Thread #{thread} has no messages of yours" + (f" before #{before}." if before else "."))
        entries = [history_entry(m) for m in messages]
        while len(entries) > 1 and sum(len(e) for e in entries) > HISTORY_CHARS:
            entries.pop(0)
            messages = messages[1:]
        earlier = int(answer.get("more") or 0) + (len(answer["messages"]) - len(messages))
        head = f"Thread #{thread}, {len(messages)} message{'s' if len(messages) != 1 else ''}, oldest first"
        if earlier:
            head += (f" ({earlier} earlier: read_thread(thread_id={thread}, before={int(messages[0]['id'])}))")
        return ToolResult(head + ":\n\n" + "\n\n".join(entries))

    async def _tool_search_messages(self, text: str) -> ToolResult:
        answer = await self._call(wire.SearchMessages, text=text)
        found = answer.get("messages") or []
        if not found:
            return ToolResult(f"No message of yours contains {clean_line(text, 200)!r}.")
        noun = "message" if len(found) == 1 else "messages"
        entries = [history_entry(m, SEARCH_PREVIEW_CHARS) for m in found]
        return ToolResult(f"{len(found)} {noun}, newest first (read_thread shows a whole thread):\n\n"
                          + "\n\n".join(entries))


def history_entry(message: Mapping[str, Any], preview: int | None = None) -> str:
    """One message of the caller's history: who to whom, when, its thread, then its body."""
    mid = int(message.get("id", 0))
    sender = "you" if message.get("mine") else f"{clean_line(message.get('from_name'))} ({clean_line(message.get('from_id'))})"
    recipient = "you" if not message.get("mine") else f"{clean_line(message.get('to_name'))} ({clean_line(message.get('to_id'))})"
    line = f"#{mid} {clean_line(message.get('sent_at'))} {sender} -> {recipient}, thread #{int(message.get('thread_id') or mid)}"
    if message.get("reply_to"):
        line += f", reply to #{int(message['reply_to'])}"
    if message.get("unread"):
        return line + "\n[not shown to you yet: it reaches you as a message (or call check_messages)]"
    body = clean_text(str(message.get("body") or ""))
    if preview is not None and len(body) > preview:
        body = body[:preview] + f"\u2026 [{len(body) - preview} more characters: read_thread]"
    return line + "\n" + "\n".join(BODY_BAR + part for part in body.split("\n"))


async def wait_until_ready(link: Any, seconds: float) -> bool:
    """True once ``link`` is connected and registered again, within ``seconds``."""
    loop = asyncio.get_running_loop()
    d = link.when_ready()
    d.addTimeout(seconds, link.reactor)
    try:
        await d.asFuture(loop)
    except Exception:
        return False
    return True
