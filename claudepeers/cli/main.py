"""``claude-peers``: the entry point, dispatching subcommands lazily.

Each command lives in a small module whose options class is imported only when that
command is named (buildbot's ``scripts/runner.py`` habit). Nothing here imports the
reactor; the commands that talk to the broker import it inside their ``run``.

Exit statuses: 0 success; 1 the command failed (unknown peer, refused, ...); 2 bad
arguments; 3 no broker is running; 4 permission denied.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence

import claudepeers

if TYPE_CHECKING:
    from twisted.python import usage

#: command -> (module, options class, one-line help). Modules are under claudepeers.cli.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("observe", "StatusOptions", "Broker health and every peer"),
    "peers": ("observe", "PeersOptions", "Quick listing of the peers"),
    "send": ("act", "SendOptions", "Send a message to a peer (tagged unverified, from 'cli')"),
    "kill": ("act", "KillOptions", "Terminate a peer's agent session (verified)"),
    "kill-broker": ("act", "KillBrokerOptions", "Stop the broker cleanly, through the broker"),
    "approvals": ("approvals", "ApprovalsOptions", "Tool calls waiting for your approval, in every session"),
    "approve": ("approvals", "ApproveOptions", "Allow a waiting tool call (the person only, never an agent)"),
    "deny": ("approvals", "DenyOptions", "Deny a waiting tool call (the person only, never an agent)"),
    "inbox": ("observe", "InboxOptions", "Read a peer's stored mail without acknowledging it"),
    "thread": ("threads", "ThreadOptions", "Read a thread of messages (give any message id of it)"),
    "claims": ("coord", "ClaimsOptions", "The agents' live claims on files"),
    "groups": ("coord", "GroupsOptions", "The agents' groups and their members"),
    "log": ("observe", "LogOptions", "Recent messages and events; -f follows new ones"),
    "manhole": ("manhole", "ManholeOptions", "Open the broker's Python shell in this terminal"),
    "install": ("install", "InstallOptions", "Register the bridge with Claude Code and Codex"),
    "uninstall": ("install", "UninstallOptions", "Remove exactly what install added"),
    "doctor": ("doctor", "DoctorOptions", "Read-only diagnosis with a verdict"),
    "dashboard": ("dashboard", "DashboardOptions", "Open the broker's live web page (a one-time link; --print)"),
    "broker": ("", "", "Run the broker in the foreground (options: broker --help)"),
    "mcp": ("", "", "Run the MCP stdio bridge (what agents start; options: mcp --help)"),
    "hook": ("", "", "Show unread peer mail through an agent's prompt hook (what agents run)"),
}

#: Commands handed over whole to another program's main(argv).
PASSTHROUGH = {
    "broker": ("claudepeers.broker.main", "main"),
    "mcp": ("claudepeers.bridge.main", "main"),
    "hook": ("claudepeers.hooks.run", "main"),
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_BROKER = 3
EXIT_PERMISSION = 4


def _lazy_options(module: str, name: str) -> Callable[[], usage.Options]:
    def make() -> usage.Options:
        return getattr(importlib.import_module(f"claudepeers.cli.{module}"), name)()

    return make


def top_level_options() -> usage.Options:
    """The top-level options. Twisted's ``usage`` is imported only here, so that the
    passthrough commands (``hook`` above all, run on every prompt) start without it."""
    from twisted.python import usage

    class Options(usage.Options):
        """Top-level options: only the subcommand, plus --version."""

        synopsis = "Usage: claude-peers <command> [options]"
        longdesc = "Peer discovery and messaging for AI coding agents on one machine."
        subCommands = [
            (name, None, _lazy_options(module, cls) if module else usage.Options, text)
            for name, (module, cls, text) in COMMANDS.items()
        ]

        def opt_version(self) -> None:
            """Print the version and exit."""
            print(f"claude-peers {claudepeers.__version__}")
            sys.exit(0)

        def postOptions(self) -> None:
            """A command is required."""
            if self.subCommand is None:
                raise usage.UsageError("a command is required")

    return Options()


def error(message: str, status: int = EXIT_FAILED) -> int:
    """Print one line ``claude-peers: <message>`` on stderr and return ``status``."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"claude-peers: {text}\n")
    sys.stderr.flush()
    return status


def dispatch(argv: Sequence[str]) -> int:
    """Parse ``argv`` (without the program name), run the command, return its exit status."""
    argv = list(argv)
    if argv and argv[0] in PASSTHROUGH:
        module, function = PASSTHROUGH[argv[0]]
        result = getattr(importlib.import_module(module), function)(argv[1:])
        return int(result or 0)
    from twisted.python import usage

    options = top_level_options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as exc:
        command = options.subCommand
        where = f"claude-peers {command}" if command else "claude-peers"
        return error(f"{exc} (see `{where} --help`)", EXIT_USAGE)
    sub = options.subOptions
    try:
        return int(sub.run() or 0)
    except PermissionError as exc:
        return error(f"permission denied: {exc}", EXIT_PERMISSION)
    except Exception as exc:
        if os.environ.get("CLAUDE_PEERS_DEBUG"):
            raise
        return error(f"internal error: {type(exc).__name__}: {exc} (CLAUDE_PEERS_DEBUG=1 shows the traceback)")


def main(argv: Sequence[str] | None = None) -> None:
    """The ``claude-peers`` console script: run and exit with the command's status."""
    try:
        status = dispatch(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
