"""Asking the shared ``codex app-server`` daemon which TUI shows a thread (blocking; run in a thread).

Every interactive Codex TUI runs a small MCP server of its own on ``127.0.0.1`` (named
``codex_tui``) and hands its address to each thread it opens or resumes; the daemon
connects the thread to it. ``mcpServerStatus/list`` with the thread id and that server
name answers its ``httpOrigin``: the port of the TUI showing the thread now. When that
TUI exits, the thread stays loaded (60 s by default) and keeps the old address, on which
nothing listens any more; when another TUI resumes the thread, the address is the new
TUI's. Checked with Codex 0.169.0 and 0.171.0.

The daemon listens on ``$CODEX_HOME/app-server-control/app-server-control.sock`` and
speaks JSON-RPC in WebSocket text messages. wsproto (sans-IO) does the WebSocket part
(upgrade, masking, framing, pings, closing); this module only moves its bytes over the
blocking UNIX socket, within one deadline for the whole exchange.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, RejectConnection, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

#: The daemon's control socket under CODEX_HOME.
CONTROL_SOCKET = os.path.join("app-server-control", "app-server-control.sock")
#: The name under which each TUI's own MCP server is attached to its threads.
TUI_SERVER = "codex_tui"
#: A daemon that does not answer within this long is taken as unknown (never as "left").
TIMEOUT_SECONDS = 2.0
#: Messages longer than this (characters) are not ours to read (our answers are a few KiB).
MAX_MESSAGE = 4 * 1024 * 1024


class DaemonError(Exception):
    """The daemon could not be asked, or answered something we cannot read."""


class _Connection:
    """One WebSocket connection to the control socket, used from a single thread."""

    def __init__(self, path: str, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ws: WSConnection = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()
        self._next_id = 0
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            self._sock.sendall(self._ws.send(Request(host="localhost", target="/")))
            event = self._next_event()
        except OSError as error:
            self.close()
            raise DaemonError(f"cannot reach the Codex daemon at {path}: {error}") from error
        except DaemonError:
            self.close()
            raise
        if isinstance(event, RejectConnection):
            self.close()
            raise DaemonError(f"the daemon refused the WebSocket upgrade: HTTP {event.status_code}")
        if not isinstance(event, AcceptConnection):
            self.close()
            raise DaemonError(f"the daemon answered the WebSocket upgrade with {type(event).__name__}")

    def close(self) -> None:
        """Say goodbye if the connection is open, then close the socket (the daemon forgets it)."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                self._sock.sendall(self._ws.send(CloseConnection(code=1000)))
        except OSError:
            pass  # it is going anyway
        try:
            self._sock.close()
        except OSError:
            pass

    def _next_event(self) -> Event:
        """The next WebSocket event, reading from the socket until one comes or time is up."""
        while not self._events:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise DaemonError("the Codex daemon did not answer in time")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except socket.timeout as error:
                raise DaemonError("the Codex daemon did not answer in time") from error
            except OSError as error:
                raise DaemonError(f"the Codex daemon's connection failed: {error}") from error
            if not data:
                raise DaemonError("the Codex daemon closed the connection")
            try:
                self._ws.receive_data(data)
                # All of them now: events() parses lazily, and we hand them out one by one.
                self._events.extend(self._ws.events())
            except RemoteProtocolError as error:
                raise DaemonError(f"the Codex daemon broke the WebSocket protocol: {error}") from error
        return self._events.popleft()

    def _send(self, event: Event) -> None:
        """Send one WebSocket event (wsproto frames and masks it)."""
        try:
            self._sock.sendall(self._ws.send(event))
        except OSError as error:
            raise DaemonError(f"the Codex daemon's connection failed: {error}") from error

    def _read_message(self) -> str:
        """The next complete text message (pings answered, fragments joined, length bounded)."""
        parts: list[str] = []
        length = 0
        while True:
            event = self._next_event()
            if isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                # wsproto reports a frame it cannot parse as a close with its reason.
                detail = f" ({event.code}: {event.reason})" if event.reason else ""
                raise DaemonError(f"the Codex daemon closed the connection{detail}")
            elif isinstance(event, TextMessage):
                parts.append(event.data)
                length += len(event.data)
                if length > MAX_MESSAGE:
                    raise DaemonError(f"a message of more than {MAX_MESSAGE} characters from the Codex daemon")
                if event.message_finished:
                    return "".join(parts)
            # binary messages and pongs carry nothing for us

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a JSON-RPC notification."""
        self._send(TextMessage(data=json.dumps({"method": method, "params": params or {}})))

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request; return its result, skipping the notifications that come first."""
        self._next_id += 1
        request_id = self._next_id
        self._send(TextMessage(data=json.dumps({"id": request_id, "method": method, "params": params or {}})))
        while True:
            try:
                message = json.loads(self._read_message())
            except ValueError as error:
                raise DaemonError(f"the Codex daemon sent something that is not JSON: {error}") from error
            if not isinstance(message, dict) or message.get("id") != request_id or "method" in message:
                continue
            if "error" in message:
                raise DaemonError(f"{method}: {message['error'].get('message', message['error'])}")
            return message.get("result")


def control_socket(codex_home: str) -> str:
    """Where the daemon of ``codex_home`` listens."""
    return os.path.join(codex_home, CONTROL_SOCKET)


def thread_tui_port(codex_home: str, thread_id: str, timeout: float = TIMEOUT_SECONDS) -> int | None:
    """The localhost port of the TUI MCP server attached to ``thread_id``, None if it has none.

    Raises :class:`DaemonError` when the daemon cannot be asked or does not know the thread
    (then nothing is known about the person, which callers must not read as "left").
    """
    connection = _Connection(control_socket(codex_home), timeout)
    try:
        connection.call("initialize", {"clientInfo": {"name": "claude_peers", "title": "claude-peers bridge",
                                                      "version": "1"}})
        connection.notify("initialized")
        result = connection.call("mcpServerStatus/list", {"threadId": thread_id, "serverName": TUI_SERVER,
                                                          "detail": "toolsAndAuthOnly"})
    finally:
        connection.close()
    for server in (result or {}).get("data") or []:
        if server.get("name") == TUI_SERVER and server.get("httpOrigin"):
            parts = urlsplit(str(server["httpOrigin"]))
            if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
                return parts.port
    return None
