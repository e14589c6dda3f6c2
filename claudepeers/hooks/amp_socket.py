"""A blocking AMP client for the hook: a handful of commands over one socket, no reactor.

Importing Twisted costs a hook about 0.1 s on every prompt, so the hook speaks the few
commands it needs (``Authenticate``, ``Attach``, ``Whoami``, ``FetchUnread``,
``Acknowledge``, as declared in :mod:`claudepeers.wire.commands`) through :mod:`claudepeers.wire.box`,
the project's one Twisted-free box codec.

Calls can be pipelined: :meth:`AmpSocket.send` writes several boxes at once, and the broker
answers them in order, so Attach + Whoami + FetchUnread cost one round trip.
"""

from __future__ import annotations

import socket
from typing import Any, Sequence

from claudepeers.wire.box import Box, BoxError, BoxReader, call_box, integer

Pairs = Sequence[tuple[bytes, bytes]]


class BrokerUnreachable(Exception):
    """No broker accepted the connection, or it closed or went silent mid-call."""


class AmpError(Exception):
    """The broker answered a call with an AMP error (``code`` is the wire's error tag)."""

    def __init__(self, code: str, description: str) -> None:
        """An error answer: its tag (e.g. ``UNKNOWN_PEER``) and text."""
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class AmpSocket:
    """One blocking AMP connection to the broker; every read waits at most ``timeout``."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        """Wrap a connected socket."""
        self._sock = sock
        self._sock.settimeout(timeout)
        self._reader = BoxReader()
        self._answers: dict[bytes, Box] = {}
        self._next_tag = 0

    @classmethod
    def connect_unix(cls, path: str, timeout: float) -> "AmpSocket":
        """Connect to the broker's UNIX socket; BrokerUnreachable when nothing listens."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls._connect(sock, path, timeout, path)

    @classmethod
    def connect_tcp(cls, host: str, port: int, timeout: float) -> "AmpSocket":
        """Connect to the broker's TCP listener; BrokerUnreachable when nothing listens."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        return cls._connect(sock, (host, port), timeout, f"{host}:{port}")

    @classmethod
    def _connect(cls, sock: socket.socket, address: Any, timeout: float, where: str) -> "AmpSocket":
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise BrokerUnreachable(f"no broker answers at {where} ({exc.strerror or exc})") from None
        return cls(sock, timeout)

    def close(self) -> None:
        """Close the connection (the broker sees it end)."""
        self._sock.close()

    def fileno(self) -> int:
        """The socket's descriptor, to wait on it with poll (the rewake hook)."""
        return self._sock.fileno()

    def send(self, calls: Sequence[tuple[str, Pairs]]) -> list[bytes]:
        """Write several calls in one go; returns their tags, in order."""
        data = bytearray()
        tags = []
        for command, arguments in calls:
            self._next_tag += 1
            tag = integer(self._next_tag)
            tags.append(tag)
            data += call_box(command, tag, arguments)
        try:
            self._sock.sendall(bytes(data))
        except OSError as exc:
            raise BrokerUnreachable(f"the broker closed the connection ({exc.strerror or exc})") from None
        return tags

    def answer(self, tag: bytes) -> Box:
        """Wait for the answer to call ``tag``; AmpError when it is an error."""
        while tag not in self._answers:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                raise BrokerUnreachable("the broker did not answer in time") from None
            except OSError as exc:
                raise BrokerUnreachable(f"the connection to the broker failed ({exc.strerror or exc})") from None
            if not data:
                raise BrokerUnreachable("the broker closed the connection")
            try:
                boxes = self._reader.feed(data)
            except BoxError as exc:
                raise BrokerUnreachable(f"the broker sent a malformed box ({exc})") from None
            for box in boxes:
                # Boxes carrying _command are calls from the broker; a hook takes none.
                key = box.get(b"_answer") or box.get(b"_error")
                if key is not None:
                    self._answers[key] = box
        box = self._answers.pop(tag)
        if b"_error" in box:
            raise AmpError(
                box.get(b"_error_code", b"UNKNOWN").decode("utf-8", "replace"),
                box.get(b"_error_description", b"").decode("utf-8", "replace"),
            )
        return box

    def call(self, command: str, arguments: Pairs = ()) -> Box:
        """One call and its answer."""
        (tag,) = self.send([(command, arguments)])
        return self.answer(tag)
