"""``claude-peers dashboard``: open (or print) a one-time link to the broker's web page.

The broker starts its dashboard on 127.0.0.1 on the first request and refuses the link
to a process with an agent among its ancestors (only the person may open it). The link
is opened in a browser when this machine has a display, else printed; ``--print``
always prints it. It works once: the browser's session cookie carries on from there.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from claudepeers.cli.runner import print_json, run_with_broker


class DashboardOptions(usage.Options):
    """``claude-peers dashboard [--print] [--json]``."""

    synopsis = "Usage: claude-peers dashboard [--print] [--json]"
    optFlags = [
        ("print", "p", "Print the link instead of opening a browser"),
        ("json", "j", "Print the broker's answer as JSON (implies --print)"),
    ]

    def run(self) -> int:
        """Ask the broker for a link, then open or print it."""

        async def body(reactor: Any, protocol: Any, settings: Any) -> int:
            from claudepeers.wire import commands as wire

            answer = await protocol.callRemote(wire.OpenDashboard)
            url = answer["url"]
            if self["json"]:
                print_json(dict(answer))
                return 0
            minutes = answer["expires_in"] / 60
            if not self["print"] and has_display() and open_browser(url):
                print(f"Opened the dashboard in your browser (the link works once, within {minutes:g} min).")
                return 0
            print(url)
            sys.stdout.flush()
            sys.stderr.write(f"claude-peers: open this link in a browser on this machine; it works once, "
                             f"within {minutes:g} min.\n")
            return 0

        return run_with_broker(body)


def has_display() -> bool:
    """True where a graphical browser can open (macOS, Windows, or an X11/Wayland display):
    elsewhere Python's webbrowser would start a text browser in this terminal."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> bool:
    """Open ``url`` in the user's browser; False when none would open."""
    import webbrowser

    try:
        return bool(webbrowser.open(url, new=2))
    except webbrowser.Error:
        return False
