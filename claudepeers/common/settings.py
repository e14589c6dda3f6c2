"""Settings: paths, switches and limits, read from the environment (DESIGN 5).

One frozen value used by the broker, the bridge, the hook and the CLI alike, so a name
like ``CLAUDE_PEERS_SOCKET`` means the same thing everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

from claudepeers.common import dsn as dsns


class SettingError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


@dataclass(frozen=True)
class Limits:
    """Every limit has a default here, an environment setting, and an error naming it."""

    max_body_bytes: int = 32 * 1024
    max_summary_bytes: int = 1024
    max_name_chars: int = 64
    messages_per_minute: int = 1200
    max_unread: int = 5000
    retention_seconds: float = 7 * 24 * 3600.0
    kill_grace_seconds: float = 5.0
    # Longer than the channel confirmation below, so that a sender hears how a push ended.
    delivery_wait_seconds: float = 2.0
    #: How long a bridge waits for Claude Code's transcript to show a channel push.
    channel_confirm_seconds: float = 1.5
    #: The same while no push was confirmed yet and the session has no transcript yet
    #: (Claude Code 2.1.332 writes a session's first line about 3 s after accepting its first
    #: message). Equal by default: longer closes the first message's double-show race with a
    #: rewake waiter, but a skipped channel then falls back (and wakes) only that much later.
    channel_first_confirm_seconds: float = 1.5
    reap_interval_seconds: float = 10.0
    tcp_ping_interval_seconds: float = 30.0
    #: The database's bound, and stored bytes of unread mail per recipient and per sender.
    max_db_bytes: int = 1024**3
    max_unread_bytes: int = 64 * 1024**2
    max_sender_unread_bytes: int = 64 * 1024**2
    #: How often the database file's identity and size are checked (also after every commit).
    db_check_seconds: float = 1.0
    #: How long a bridge tool call waits for the broker's answer before it says so.
    call_timeout_seconds: float = 5.0
    #: Before a connection authenticates (TCP) or binds (UNIX): its largest box, how long
    #: it may stay so, and how many such connections one listener holds (DESIGN 4, Security).
    unbound_box_bytes: int = 8192
    unbound_seconds: float = 10.0
    max_unbound: int = 256
    #: How often the broker checks that its socket is still the file at its path.
    socket_check_seconds: float = 5.0
    #: The longest wait_for_reply (a tool call that long must also fit the agent's own bound).
    max_wait_seconds: float = 600.0
    #: The most recipients of one message to a scope or group, and the longest claim on files.
    max_fanout: int = 100
    max_claim_seconds: float = 24 * 3600.0

    #: environment name -> (field, type)
    ENV = {
        "CLAUDE_PEERS_MAX_BODY_BYTES": ("max_body_bytes", int),
        "CLAUDE_PEERS_MAX_SUMMARY_BYTES": ("max_summary_bytes", int),
        "CLAUDE_PEERS_MAX_NAME_CHARS": ("max_name_chars", int),
        "CLAUDE_PEERS_MESSAGES_PER_MINUTE": ("messages_per_minute", int),
        "CLAUDE_PEERS_MAX_UNREAD": ("max_unread", int),
        "CLAUDE_PEERS_RETENTION_SECONDS": ("retention_seconds", float),
        "CLAUDE_PEERS_KILL_GRACE_SECONDS": ("kill_grace_seconds", float),
        "CLAUDE_PEERS_DELIVERY_WAIT_SECONDS": ("delivery_wait_seconds", float),
        "CLAUDE_PEERS_CHANNEL_CONFIRM_SECONDS": ("channel_confirm_seconds", float),
        "CLAUDE_PEERS_CHANNEL_FIRST_CONFIRM_SECONDS": ("channel_first_confirm_seconds", float),
        "CLAUDE_PEERS_TCP_PING_SECONDS": ("tcp_ping_interval_seconds", float),
        "CLAUDE_PEERS_REAP_SECONDS": ("reap_interval_seconds", float),
        "CLAUDE_PEERS_MAX_DB_BYTES": ("max_db_bytes", int),
        "CLAUDE_PEERS_MAX_UNREAD_BYTES": ("max_unread_bytes", int),
        "CLAUDE_PEERS_MAX_SENDER_UNREAD_BYTES": ("max_sender_unread_bytes", int),
        "CLAUDE_PEERS_DB_CHECK_SECONDS": ("db_check_seconds", float),
        "CLAUDE_PEERS_CALL_TIMEOUT_SECONDS": ("call_timeout_seconds", float),
        "CLAUDE_PEERS_UNBOUND_BOX_BYTES": ("unbound_box_bytes", int),
        "CLAUDE_PEERS_UNBOUND_SECONDS": ("unbound_seconds", float),
        "CLAUDE_PEERS_MAX_UNBOUND": ("max_unbound", int),
        "CLAUDE_PEERS_SOCKET_CHECK_SECONDS": ("socket_check_seconds", float),
        "CLAUDE_PEERS_MAX_WAIT_SECONDS": ("max_wait_seconds", float),
        "CLAUDE_PEERS_MAX_FANOUT": ("max_fanout", int),
        "CLAUDE_PEERS_MAX_CLAIM_SECONDS": ("max_claim_seconds", float),
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Limits":
        """Read overrides from the environment; a non-number or a value <= 0 is an error."""
        values = {}
        for env_name, (attr, kind) in cls.ENV.items():
            raw = environ.get(env_name)
            if raw is None or raw == "":
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise SettingError(f"{env_name}={raw!r} is not a number") from None
            if value <= 0:
                raise SettingError(f"{env_name}={raw!r} must be greater than 0")
            values[attr] = value
        return cls(**values)


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or os.path.expanduser("~"))


@dataclass(frozen=True)
class Settings:
    """Where things live and which switches are on; see DESIGN 5 for the names."""

    socket_path: Path
    #: The SQLite file (with CLAUDE_PEERS_DB a PostgreSQL DSN: the default path, beside which
    #: the TCP key is kept, and no database file is used).
    db_path: Path
    token_path: Path
    tcp_enabled: bool = False
    tcp_port: int = 7899
    url: str | None = None
    autostart: bool = True
    peer_name: str | None = None
    manhole_path: Path | None = None
    log_path: Path | None = None
    #: The dashboard's port on 127.0.0.1 (0: any free port), CLAUDE_PEERS_DASHBOARD_PORT.
    dashboard_port: int = 0
    limits: Limits = field(default_factory=Limits)
    #: A PostgreSQL URL or DSN from CLAUDE_PEERS_DB (DESIGN 7); None: the SQLite file db_path.
    db_dsn: str | None = None

    @property
    def database(self) -> str:
        """What the broker opens: the PostgreSQL DSN, or the SQLite path."""
        return self.db_dsn if self.db_dsn is not None else str(self.db_path)

    @property
    def database_display(self) -> str:
        """The database as it may be shown in logs and status: a DSN's password masked."""
        return dsns.display(self.db_dsn) if self.db_dsn is not None else str(self.db_path)

    @property
    def run_dir(self) -> Path:
        """The 0700 directory holding the socket, its lock and the token."""
        return self.socket_path.parent

    @property
    def lock_path(self) -> Path:
        """Taken by the one broker (and the autostarting client) of this socket."""
        return self.socket_path.with_name(self.socket_path.name + ".start-lock")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        home = _home(env)
        run_dir = home / ".claude" / "run"
        socket_path = Path(env.get("CLAUDE_PEERS_SOCKET") or run_dir / "claude-peers.sock")
        check_socket_path(socket_path, "CLAUDE_PEERS_SOCKET" if env.get("CLAUDE_PEERS_SOCKET")
                          else "the default socket path under HOME (set CLAUDE_PEERS_SOCKET)")
        if env.get("CLAUDE_PEERS_MANHOLE"):
            check_socket_path(Path(env["CLAUDE_PEERS_MANHOLE"]), "CLAUDE_PEERS_MANHOLE")
        port_raw = env.get("CLAUDE_PEERS_PORT") or "7899"
        try:
            port = int(port_raw)
        except ValueError:
            raise SettingError(f"CLAUDE_PEERS_PORT={port_raw!r} is not a port number") from None
        if not 0 < port < 65536:
            raise SettingError(f"CLAUDE_PEERS_PORT={port_raw!r} is not a port number")
        dashboard_raw = env.get("CLAUDE_PEERS_DASHBOARD_PORT") or "0"
        try:
            dashboard_port = int(dashboard_raw)
        except ValueError:
            raise SettingError(f"CLAUDE_PEERS_DASHBOARD_PORT={dashboard_raw!r} is not a port number (0: any free port)") from None
        if not 0 <= dashboard_port < 65536:
            raise SettingError(f"CLAUDE_PEERS_DASHBOARD_PORT={dashboard_raw!r} is not a port number (0: any free port)")
        url = env.get("CLAUDE_PEERS_URL") or None
        if url is not None:
            parse_url(url)
        db = env.get("CLAUDE_PEERS_DB") or None
        db_dsn = db if dsns.is_postgres(db) else None
        return cls(
            socket_path=socket_path,
            db_path=Path(db) if db and db_dsn is None else home / ".claude-peers.db",
            db_dsn=db_dsn,
            token_path=Path(
                env.get("CLAUDE_PEERS_TOKEN_FILE") or socket_path.parent / "claude-peers.token"
            ),
            tcp_enabled=_flag(env.get("CLAUDE_PEERS_TCP")),
            tcp_port=port,
            url=url,
            autostart=not _flag(env.get("CLAUDE_PEERS_NO_AUTOSTART")),
            peer_name=env.get("CLAUDE_PEER_NAME") or None,
            manhole_path=Path(env["CLAUDE_PEERS_MANHOLE"]) if env.get("CLAUDE_PEERS_MANHOLE") else None,
            log_path=Path(env["CLAUDE_PEERS_LOG"]) if env.get("CLAUDE_PEERS_LOG") else None,
            dashboard_port=dashboard_port,
            limits=Limits.from_env(env),
        )

    def with_changes(self, **changes: object) -> "Settings":
        """A copy with some fields replaced (command-line options win over the environment)."""
        return replace(self, **changes)


def check_socket_path(path: Path, setting: str) -> None:
    """A SettingError naming ``setting`` and this platform's limit when ``path`` is too long."""
    from claudepeers.common import platforms

    try:
        platforms.check_socket_path(path, setting)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` or the seed's ``http://host:port`` -> (host, port)."""
    parsed = urlparse(url)
    if parsed.scheme not in {"tcp", "http"} or not parsed.hostname:
        raise SettingError(
            f"CLAUDE_PEERS_URL={url!r}: expected tcp://127.0.0.1:7899 (or http://127.0.0.1:7899)"
        )
    try:
        port = parsed.port or 7899
    except ValueError:
        raise SettingError(f"CLAUDE_PEERS_URL={url!r} has a bad port") from None
    return parsed.hostname, port
