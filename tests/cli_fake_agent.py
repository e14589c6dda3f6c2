"""A stand-in agent session for the CLI tests, run as a script named ``claude`` or ``codex``.

The broker recognises agent processes by name, so the tests copy a tiny launcher named
after the agent kind that runs this module. It registers itself as its own agent
session (its own pid is "an ancestor" of the connection), sets a summary, prints
``READY <peer_id>`` and then, for every pushed message, ``MESSAGE <json>``. It answers
``shown=True`` (a Claude with channels) or ``shown=False`` (``--inline``: a Codex-like
peer whose messages stay queued). SIGTERM ends it, as the broker's kill does.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import psutil
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.protocols import amp

from claudepeers.wire import commands as wire
from claudepeers.common.client import connect
from claudepeers.common.settings import Settings


def make_locator(shown: bool) -> amp.CommandLocator:
    """Answers the broker's Deliver pushes, printing each message on stdout."""

    class Locator(amp.CommandLocator):
        @wire.Deliver.responder
        def deliver(self, messages: list) -> dict:
            for message in messages:
                sys.stdout.write("MESSAGE " + json.dumps(message) + "\n")
            sys.stdout.flush()
            return {"shown": [shown] * len(messages)}

    return Locator()


async def run(reactor: Any, client_type: str, name: str, summary: str, shown: bool) -> None:
    """Register, announce READY, then serve pushes until the process is ended."""
    protocol = await connect(reactor, Settings.from_env(), locator=make_locator(shown), autostart=False)
    me = psutil.Process()
    answer = await protocol.callRemote(
        wire.Register,
        agent_pid=me.pid,
        agent_start=me.create_time(),
        client_type=client_type,
        cwd=os.getcwd(),
        name=name,
        delivery="push" if shown else "inline",
    )
    await protocol.callRemote(wire.SetSummary, summary=summary)
    sys.stdout.write(f"READY {answer['peer_id']}\n")
    sys.stdout.flush()
    await Deferred()  # forever: SIGTERM stops the reactor


def main(kind: str) -> None:
    """``<claude|codex> NAME SUMMARY [--inline]``; ``kind`` is the launcher's name."""
    client_type = {"claude": "claude-code", "codex": "codex"}[kind]
    name, summary = sys.argv[1], sys.argv[2]
    shown = "--inline" not in sys.argv[3:]
    task.react(lambda reactor: ensureDeferred(run(reactor, client_type, name, summary, shown)))


if __name__ == "__main__":
    main(os.path.basename(sys.argv[0]))
