"""``twistd claude-peers`` and ``claude-peers broker`` options: they override the
CLAUDE_PEERS_* environment and become one :class:`~claudepeers.common.settings.Settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.python import usage

from claudepeers.common import dsn as dsns
from claudepeers.common.settings import SettingError, Settings, check_socket_path


class Options(usage.Options):
    """``twistd claude-peers`` options; they override the CLAUDE_PEERS_* environment."""

    optParameters = [
        ["socket", "s", None, "UNIX socket path (CLAUDE_PEERS_SOCKET; default ~/.claude/run/claude-peers.sock)"],
        ["db", "d", None, "SQLite database path, or a PostgreSQL URL/DSN (CLAUDE_PEERS_DB; default "
                          "~/.claude-peers.db; a password belongs in ~/.pgpass or CLAUDE_PEERS_DB, not here)"],
        ["tcp", None, None, "also listen on 127.0.0.1:PORT with a token (CLAUDE_PEERS_TCP=1 uses CLAUDE_PEERS_PORT)"],
        ["manhole", None, None, "serve a Python shell on this UNIX socket path (CLAUDE_PEERS_MANHOLE)"],
    ]
    optFlags = [["manhole-default", None, "serve the manhole on <run dir>/claude-peers.manhole"]]

    def postOptions(self) -> None:
        """Merge options into settings (environment first, options win)."""
        try:
            settings = Settings.from_env()
        except SettingError as exc:
            raise usage.UsageError(str(exc)) from None
        changes: dict[str, Any] = {}
        if self["socket"]:
            changes["socket_path"] = Path(self["socket"]).absolute()
            if not os.environ.get("CLAUDE_PEERS_TOKEN_FILE"):
                changes["token_path"] = changes["socket_path"].parent / "claude-peers.token"
        if self["db"] and dsns.is_postgres(self["db"]):
            changes["db_dsn"] = self["db"]
        elif self["db"]:
            changes["db_path"] = Path(self["db"]).absolute()
            changes["db_dsn"] = None
        if self["tcp"]:
            try:
                changes["tcp_port"] = int(self["tcp"])
            except ValueError:
                raise usage.UsageError(f"--tcp takes a port number, not {self['tcp']!r}") from None
            changes["tcp_enabled"] = True
        settings = settings.with_changes(**changes)
        try:
            if self["socket"]:
                check_socket_path(settings.socket_path, "--socket")
            if self["manhole"]:
                check_socket_path(Path(self["manhole"]).absolute(), "--manhole")
        except SettingError as exc:
            raise usage.UsageError(str(exc)) from None
        if self["manhole"]:
            settings = settings.with_changes(manhole_path=Path(self["manhole"]).absolute())
        elif self["manhole-default"]:
            settings = settings.with_changes(manhole_path=settings.run_dir / "claude-peers.manhole")
        self["settings"] = settings
