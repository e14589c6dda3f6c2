"""What every hook process shares: its link to the broker, its stdin, its log.

The prompt hooks (:mod:`.run`) and the rewake waiter (:mod:`.wait`) both use these; neither
imports the other for them. No Twisted here: a hook starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, TextIO

from claudepeers.common.settings import Settings, parse_url
from claudepeers.hooks.amp_socket import AmpSocket, BrokerUnreachable
from claudepeers.wire.box import text

#: Seconds the hook waits for the broker at each step; a hung broker costs the turn this much.
CALL_TIMEOUT = 3.0
#: Messages fetched per run; more than ever fit into one output.
PAGE = 50
#: The log is renamed to ``hooks.log.1`` beyond this size.
MAX_LOG_BYTES = 1_000_000


def log_path(settings: Settings | None) -> Path:
    """Where hook errors are logged: ``hooks.log`` next to the broker's socket."""
    if settings is not None:
        return settings.run_dir / "hooks.log"
    home = Path(os.environ.get("HOME") or os.path.expanduser("~"))
    return home / ".claude" / "run" / "hooks.log"


def write_log(path: Path, event: str, line: str) -> None:
    """Append one timestamped line; never raises (a hook must not fail over its log)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if path.stat().st_size > MAX_LOG_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flat = " ".join(line.split())
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} hook {event or '?'} pid {os.getpid()}: {flat}\n")
    except Exception:
        pass


def read_payload(stdin: TextIO) -> dict[str, Any]:
    """The hook's JSON input (an empty dict when there is none or it is not an object)."""
    try:
        if stdin.isatty():
            return {}
        data = json.loads(stdin.read() or "{}")
    except (ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def connect(settings: Settings) -> tuple[AmpSocket, list[tuple[str, list]]]:
    """Connect without autostart; returns the socket and the calls to send first (TCP token)."""
    if settings.url:
        host, port = parse_url(settings.url)
        sock = AmpSocket.connect_tcp(host, port, CALL_TIMEOUT)
        try:
            token = settings.token_path.read_text().strip()
        except OSError as exc:
            sock.close()
            raise BrokerUnreachable(f"cannot read the TCP token file {settings.token_path}: {exc.strerror}") from None
        return sock, [("Authenticate", [(b"token", text(token))])]
    return AmpSocket.connect_unix(str(settings.socket_path), CALL_TIMEOUT), []
