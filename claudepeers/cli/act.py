"""Commands that change something: ``send``, ``kill``, ``kill-broker``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from claudepeers.cli.main import EXIT_FAILED, error
from claudepeers.cli.runner import print_json, run_with_broker


def _message_id(text: str) -> int:
    """A message id option: a positive number (usage.Options reports the ValueError)."""
    value = int(text)
    if value <= 0:
        raise ValueError("a message id is a positive number")
    return value


class SendOptions(usage.Options):
    """``claude-peers send <id|name> <message...>`` (``-`` reads the message from stdin)."""

    synopsis = "Usage: claude-peers send [--json] [--reply-to ID] <id|name> <message...>   (message '-' reads stdin)"
    optFlags = [("json", "j", "Print the broker's answer as JSON")]
    optParameters = [("reply-to", "r", None, "Reply to message ID (of the recipient's own mail): it joins that thread",
                      _message_id)]

    def parseArgs(self, target: str, *words: str) -> None:
        """A target and the message (several words are joined by spaces).

        Both must be UTF-8, from argv and from stdin alike: anything else is refused (exit
        2) with the offending byte, never sent mangled. Sizes are checked here too, so
        that the error names the limit.
        """
        if not words:
            raise usage.UsageError("missing the message")
        if words == ("-",):
            message = _utf8(sys.stdin.buffer.read(), "the message on stdin")
        else:
            message = " ".join(_checked_argument(word, "the message") for word in words)
        if not message.strip():
            raise usage.UsageError("the message is empty")
        target = _checked_argument(target, "the target")
        if len(target.encode("utf-8")) > MAX_TARGET_BYTES:
            raise usage.UsageError(
                f"the target is {len(target.encode('utf-8')):,} bytes long; a peer id or name is at most "
                f"{MAX_TARGET_BYTES:,} bytes (names are at most 64 characters unless CLAUDE_PEERS_MAX_NAME_CHARS "
                "says otherwise)"
            )
        size = len(message.encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            raise usage.UsageError(
                f"the message is {size:,} bytes; the wire carries at most {MAX_MESSAGE_BYTES:,} bytes (8 MiB) "
                "and the broker accepts at most its body limit (CLAUDE_PEERS_MAX_BODY_BYTES, 32 KiB unless raised)"
            )
        self["target"] = target
        self["message"] = message

    def run(self) -> int:
        """Send the message as ``cli`` (unverified) and say whether it was shown, woke the agent, or is queued."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            if self["target"].startswith(("scope:", "group:")):
                return await _send_many(protocol, self["target"], self["message"], self["json"])
            threading = {} if self["reply-to"] is None else {"reply_to": self["reply-to"]}
            answer = await protocol.callRemote(wire.Send, to=self["target"], body=self["message"], **threading)
            if self["json"]:
                print_json(dict(answer))
                return 0
            who = f"{answer['to_name']} ({answer['to_id']})"
            if self["reply-to"] is not None:
                who += f" (a reply in thread #{answer.get('thread_id')})"
            if answer["status"] == "shown":
                print(f"Shown to {who}, message {answer['message_id']}.")
            elif answer["status"] == "woke":
                print(f"Woke {who} to read message {answer['message_id']}.")
            else:
                detail = f": {answer['detail']}" if answer.get("detail") else ""
                print(f"Queued for {who}, message {answer['message_id']}{detail}.")
            return 0

        return run_with_broker(body, autostart=True)


async def _send_many(protocol: Any, target: str, message: str, as_json: bool) -> int:
    """Send to every peer of a scope or group; one line per recipient's outcome."""
    from claudepeers.wire import commands as wire

    answer = await protocol.callRemote(wire.SendMany, to=target, body=message)
    if as_json:
        print_json(dict(answer))
        return 0
    for outcome in answer["recipients"]:
        number = f", message {outcome['message_id']}" if outcome["message_id"] is not None else ""
        print(f"{outcome['status'].capitalize()}: {outcome['to_name']} ({outcome['to_id']}){number}: {outcome['detail']}")
    return 0 if any(o["status"] != "refused" for o in answer["recipients"]) else EXIT_FAILED


#: What one AMP value carries (a target), and what the wire carries for a body (wire.BigText).
MAX_TARGET_BYTES = 65_535
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def _utf8(data: bytes, what: str) -> str:
    """``data`` as text; a usage error naming the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise usage.UsageError(
            f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "claude-peers sends text only"
        ) from None


def _checked_argument(word: str, what: str) -> str:
    """An argv word; invalid UTF-8 reaches Python as lone surrogates (surrogateescape)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return _utf8(word.encode("utf-8", "surrogateescape"), what)
    return word


class KillOptions(usage.Options):
    """``claude-peers kill <id|name>``."""

    synopsis = "Usage: claude-peers kill [--json] <id|name>"
    optFlags = [("json", "j", "Print the broker's answer as JSON")]

    def parseArgs(self, target: str) -> None:
        """One target: a peer id or unique name."""
        self["target"] = target

    def run(self) -> int:
        """Ask the broker to terminate the peer's agent session (it verifies pid and start)."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.KillPeer, target=self["target"])
            if self["json"]:
                print_json(dict(answer))
            else:
                detail = f": {answer['detail']}" if answer.get("detail") else ""
                print(f"{answer['outcome']} {answer['peer_id']}{detail}")
            return EXIT_FAILED if answer["outcome"] in FAILED_KILL_OUTCOMES else 0

        return run_with_broker(body)


#: KillPeer outcomes that mean the session was not ended.
FAILED_KILL_OUTCOMES = {"failed", "error", "refused", "survived"}


class KillBrokerOptions(usage.Options):
    """``claude-peers kill-broker``."""

    synopsis = "Usage: claude-peers kill-broker [--wait SECONDS]"
    optParameters = [("wait", "w", 10.0, "How long to wait for the broker to close", float)]

    def run(self) -> int:
        """Ask the broker to stop (StopBroker) and wait until it has closed the connection."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from twisted.internet.defer import Deferred

            from claudepeers.wire import commands as wire
            from claudepeers.cli.follow import connection_closed

            closed: Deferred = connection_closed(protocol)
            answer = await protocol.callRemote(wire.StopBroker)
            closed.addTimeout(self["wait"], reactor)
            try:
                await closed
            except Exception:
                return error(
                    f"the broker (pid {answer['pid']}) accepted the stop but still runs after "
                    f"{self['wait']:g} s",
                    EXIT_FAILED,
                )
            print(f"Broker stopped (pid {answer['pid']}).")
            return 0

        return run_with_broker(body)
