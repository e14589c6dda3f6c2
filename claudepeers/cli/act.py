"""Commands that change something: ``send``, ``kill``, ``kill-broker``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from claudepeers.cli.main import EXIT_FAILED, error
from claudepeers.cli.runner import print_json, run_with_broker


class SendOptions(usage.Options):
    """``claude-peers send <id|name> <message...>`` (``-`` reads the message from stdin)."""

    synopsis = "Usage: claude-peers send [--json] <id|name> <message...>   (message '-' reads stdin)"
    optFlags = [("json", "j", "Print the broker's answer as JSON")]

    def parseArgs(self, target: str, *words: str) -> None:
        """A target and the message (several words are joined by spaces)."""
        if not words:
            raise usage.UsageError("missing the message")
        message = sys.stdin.read() if words == ("-",) else " ".join(words)
        if not message.strip():
            raise usage.UsageError("the message is empty")
        self["target"] = target
        self["message"] = message

    def run(self) -> int:
        """Send the message as ``cli`` (unverified) and say whether it was shown, woke the agent, or is queued."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers import wire

            answer = await protocol.callRemote(wire.Send, to=self["target"], body=self["message"])
            if self["json"]:
                print_json(dict(answer))
                return 0
            who = f"{answer['to_name']} ({answer['to_id']})"
            if answer["status"] == "shown":
                print(f"Shown to {who}, message {answer['message_id']}.")
            elif answer["status"] == "woke":
                print(f"Woke {who} to read message {answer['message_id']}.")
            else:
                detail = f": {answer['detail']}" if answer.get("detail") else ""
                print(f"Queued for {who}, message {answer['message_id']}{detail}.")
            return 0

        return run_with_broker(body, autostart=True)


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
            from claudepeers import wire

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

            from claudepeers import wire
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
