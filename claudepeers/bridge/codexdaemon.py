"""Asking the shared ``codex app-server`` daemon which TUI shows a thread (blocking; run in a thread).

Every interactive Codex TUI runs a small MCP server of its own on ``127.0.0.1`` (named
``codex_tui``) and hands its address to each thread it opens or resumes; the daemon
connects the thread to it. ``mcpServerStatus/list`` with the thread id and that server
name answers its ``httpOrigin``: the port of the TUI showing the thread now. When that
TUI exits, the thread stays loaded (60 s by default) and keeps the old address, on which
nothing listens any more; when another TUI resumes the thread, the address is the new
TUI's. Checked with Codex 0.169.0 and 0.171.0.

The daemon listens on ``$CODEX_HOME/app-server-control/app-server-control.sock`` and
speaks JSON-RPC in WebSocket text frames. We need three calls on a short-lived
connection, so a minimal RFC 6455 client (masked text frames out; text, ping and close
frames in) does it without a dependency.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

#: The daemon's control socket under CODEX_HOME.
CONTROL_SOCKET = os.path.join("app-server-control", "app-server-control.sock")
#: The name under which each TUI's own MCP server is attached to its threads.
TUI_SERVER = "codex_tui"
#: A daemon that does not answer within this long is taken as unknown (never as "left").
TIMEOUT_SECONDS = 2.0
#: Frames larger than this are not ours to read (our answers are a few KiB).
MAX_FRAME = 4 * 1024 * 1024


class DaemonError(Exception):
    """The daemon could not be asked, or answered something we cannot read."""


class _Connection:
    """One WebSocket connection to the control socket, used from a single thread."""

    def __init__(self, path: str, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        self._next_id = 0
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            key = base64.b64encode(os.urandom(16)).decode()
            self._sock.sendall(
                ("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            while b"\r\n\r\n" not in self._buffer:
                self._fill()
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise DaemonError(f"the daemon refused the WebSocket upgrade: {status[:80]!r}")
        except OSError as error:
            self.close()
            raise DaemonError(f"cannot reach the Codex daemon at {path}: {error}") from error

    def close(self) -> None:
        """Close the socket (the daemon forgets this connection)."""
        try:
            self._sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DaemonError("the Codex daemon did not answer in time")
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(65536)
        except socket.timeout as error:
            raise DaemonError("the Codex daemon did not answer in time") from error
        if not data:
            raise DaemonError("the Codex daemon closed the connection")
        self._buffer += data

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _send_frame(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self._sock.sendall(head + mask + masked)

    def _read_message(self) -> bytes:
        """The next complete text message (pings answered, fragments joined)."""
        parts: list[bytes] = []
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._take(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._take(8))[0]
            if length > MAX_FRAME:
                raise DaemonError(f"a frame of {length} bytes from the Codex daemon")
            mask = self._take(4) if second & 0x80 else b""
            payload = self._take(length)
            if mask:
                payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise DaemonError("the Codex daemon closed the connection")
            if opcode == 0x9:
                self._send_frame(payload, 0xA)
                continue
            if opcode in (0x0, 0x1):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts)
            # binary and pong frames carry nothing for us

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a JSON-RPC notification."""
        self._send_frame(json.dumps({"method": method, "params": params or {}}).encode())

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request; return its result, skipping the notifications that come first."""
        self._next_id += 1
        request_id = self._next_id
        self._send_frame(json.dumps({"id": request_id, "method": method, "params": params or {}}).encode())
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
