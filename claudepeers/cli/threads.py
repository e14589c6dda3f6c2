"""``claude-peers thread <id>``: a thread of messages, as the operator sees it (all of it).

Read-only, like ``inbox``: nothing is acknowledged, and no broker is started.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from claudepeers.cli.runner import print_json, run_with_broker


class ThreadOptions(usage.Options):
    """``claude-peers thread [--json] [--limit N] <message id>``."""

    synopsis = "Usage: claude-peers thread [--json] [--limit N] <message id>   (any message of the thread)"
    optFlags = [("json", "j", "Print the messages as JSON")]
    optParameters = [("limit", "n", 200, "Show at most the newest N messages (1 to 200)", int)]

    def parseArgs(self, message_id: str) -> None:
        """The id of the thread or of any message in it."""
        try:
            self["message_id"] = int(message_id)
        except ValueError:
            raise usage.UsageError(f"a message id is a number, not {message_id!r}") from None
        if self["message_id"] <= 0:
            raise usage.UsageError("a message id is a positive number")

    def run(self) -> int:
        """Print the thread, oldest first."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.ReadThread, thread_id=self["message_id"], limit=self["limit"])
            if self["json"]:
                print_json(dict(answer))
                return 0
            print(format_thread(answer))
            return 0

        return run_with_broker(body)


def format_thread(answer: dict[str, Any]) -> str:
    """The operator's view of a thread: one header line per message, its body indented."""
    from claudepeers.common.render import clean_line, clean_text

    messages = answer.get("messages") or []
    lines = [f"Thread #{answer['thread_id']}: {len(messages)} message{'s' if len(messages) != 1 else ''}"
             + (f" ({answer['more']} earlier not shown)" if answer.get("more") else "")]
    for message in messages:
        head = (f"#{message['id']}  {clean_line(message.get('sent_at'))}  {clean_line(message.get('from_name'))} "
                f"({clean_line(message.get('from_id'))}) -> {clean_line(message.get('to_name'))} "
                f"({clean_line(message.get('to_id'))})")
        if message.get("reply_to"):
            head += f", reply to #{message['reply_to']}"
        head += ", shown" if message.get("acked_at") else ", not shown yet"
        lines.append("")
        lines.append(head)
        lines += ["    " + line for line in clean_text(str(message.get("body") or "")).split("\n")]
    return "\n".join(lines)
