"""Commands that only look: ``status``, ``peers``, ``inbox``, ``log [-f]``.

None of them starts a broker: a report on a broker that is not running says so.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from claudepeers.cli import render
from claudepeers.cli.main import EXIT_FAILED, error
from claudepeers.cli.runner import print_json, run_with_broker


class StatusOptions(usage.Options):
    """``claude-peers status [--json]``."""

    synopsis = "Usage: claude-peers status [--json]"
    optFlags = [("json", "j", "Print the broker's status as JSON")]

    def run(self) -> int:
        """Ask the broker for its status and every peer, and print it."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.Status)
            status = answer["status"]
            if self["json"]:
                print_json(status)
            else:
                print(render.format_status(status))
            return 0

        return run_with_broker(body)


class PeersOptions(usage.Options):
    """``claude-peers peers [--json] [--online] [--network]``."""

    synopsis = "Usage: claude-peers peers [--json] [--online] [--network]"
    optFlags = [
        ("json", "j", "Print the peers as a JSON list"),
        ("online", "o", "Only peers whose bridge is connected"),
        ("network", "n", "The peers of every host sharing the broker's database (not only this host's)"),
    ]

    def run(self) -> int:
        """List the peers on this machine."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(
                wire.ListPeers, scope="network" if self["network"] else "machine", include_offline=not self["online"]
            )
            peers = answer["peers"]
            if self["json"]:
                print_json(peers)
            else:
                print(render.format_peers(peers))
            return 0

        return run_with_broker(body)


class InboxOptions(usage.Options):
    """``claude-peers inbox <id|name> [--limit N] [--json]``."""

    synopsis = "Usage: claude-peers inbox <id|name> [--limit N] [--json]"
    optFlags = [("json", "j", "Print the messages as a JSON list")]
    optParameters = [("limit", "n", 50, "At most this many messages", int)]

    def parseArgs(self, target: str) -> None:
        """One target: a peer id or unique name (gone peers too)."""
        self["target"] = target

    def run(self) -> int:
        """Print a peer's stored mail; nothing is marked read."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.Inbox, target=self["target"], limit=self["limit"])
            if self["json"]:
                print_json(answer["messages"])
            else:
                print(render.format_messages(answer["messages"]))
            return 0

        return run_with_broker(body)


class LogOptions(usage.Options):
    """``claude-peers log [-f] [-n N] [--json]``."""

    synopsis = "Usage: claude-peers log [-f] [-n N] [--json]"
    optFlags = [
        ("follow", "f", "After the recent events, print new ones as the broker pushes them"),
        ("json", "j", "One JSON object per line"),
    ]
    optParameters = [("lines", "n", 50, "How many recent events to print first", int)]

    def _emit(self, event: dict) -> None:
        if self["json"]:
            import json

            sys.stdout.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(render.format_event(event) + "\n")
        sys.stdout.flush()

    def run(self) -> int:
        """Print recent events; with ``-f`` subscribe and print pushed events until Ctrl-C."""
        from claudepeers.cli.follow import EventPrinter, connection_closed

        printer = EventPrinter(self._emit)

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            closed = connection_closed(protocol)
            if self["follow"]:
                # Subscribe first and hold pushes back, so nothing falls between the two.
                printer.hold()
                await protocol.callRemote(wire.Watch)
            answer = await protocol.callRemote(wire.RecentEvents, limit=self["lines"])
            for event in answer["events"]:
                printer.emit(event)
            if not self["follow"]:
                return 0
            printer.release()
            from twisted.internet.defer import Deferred, race

            interrupted: Deferred = Deferred()
            # Ctrl-C stops the reactor; "before shutdown" runs before connections drop.
            reactor.addSystemEventTrigger("before", "shutdown", interrupted.callback, None)
            index, _ = await race([closed, interrupted])
            if index == 1:
                return 0
            return error("the broker closed the connection", EXIT_FAILED)

        return run_with_broker(body, locator=printer.locator(), interrupted_status=0)
