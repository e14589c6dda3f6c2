"""A blocking AMP client on a plain socket, for fault, fuzz and soak tests of a real broker.

It frames boxes with :mod:`claudepeers.wire.box` (unchecked where a fuzzer asks), so it can send well-formed commands (:meth:`RawAMP.call`) and
anything else (:meth:`RawAMP.send_bytes`). Pushes from the broker (``Deliver``) that
arrive while waiting for an answer are answered ``shown`` (or held) and recorded.
"""

from __future__ import annotations

import collections
import itertools
import socket
import time
from typing import Any

from twisted.protocols import amp

from claudepeers.wire import box as ampbox

from claudepeers.wire import commands as wire
from claudepeers.hooks.amp_socket import AmpError as RemoteError  # the broker's error box, as the hook raises it


class Closed(Exception):
    """The broker closed the connection."""


def frame(box: dict[bytes, bytes]) -> bytes:
    """One AMP box on the wire (no length checks: fuzzers want to break them)."""
    return ampbox.encode_unchecked(box.items())


class RawAMP:
    """One connection to the broker."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self._reader = ampbox.BoxReader()
        self._boxes: collections.deque[dict[bytes, bytes]] = collections.deque()
        self._tags = itertools.count(1)
        self.pushed: list[dict[str, Any]] = []
        self.show = True  # answer Deliver shown=True (else held)

    @classmethod
    def unix(cls, path: str, timeout: float = 10.0) -> "RawAMP":
        """Connect to a UNIX socket."""
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, timeout)

    @classmethod
    def tcp(cls, port: int, token: str | None = None, timeout: float = 10.0) -> "RawAMP":
        """Connect to 127.0.0.1:port and present ``token`` when given."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        client = cls(sock, timeout)
        if token is not None:
            client.call(wire.Authenticate, token=token)
        return client

    def close(self) -> None:
        """Close the socket."""
        try:
            self.sock.close()
        except OSError:
            pass

    # --- bytes ---------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes."""
        self.sock.sendall(data)

    def read_box(self, timeout: float | None = None) -> dict[bytes, bytes]:
        """The next box from the broker; Closed when the connection ends."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while not self._boxes:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("the broker closed the connection")
            self._boxes.extend(self._reader.feed(chunk))
        return self._boxes.popleft()

    # --- commands ------------------------------------------------------------------------

    def call(self, command: type[amp.Command], **arguments: Any) -> dict[str, Any]:
        """Call ``command`` and wait for its answer; RemoteError for an error box."""
        tag = str(next(self._tags)).encode()
        box = dict(command.makeArguments(arguments, None))
        box[b"_command"] = command.commandName
        box[b"_ask"] = tag
        self.send_bytes(frame(box))
        return self.answer(tag, command)

    def answer(self, tag: bytes, command: type[amp.Command] | None = None) -> dict[str, Any]:
        """Read boxes (answering pushes) until the answer or error for ``tag`` arrives."""
        while True:
            box = self.read_box()
            if b"_command" in box:
                self._pushed(box)
                continue
            if box.get(b"_answer") == tag:
                if command is None:
                    return {k.decode(): v for k, v in box.items()}
                return command.parseResponse(amp.AmpBox(box), None)
            if box.get(b"_error") == tag:
                raise RemoteError(box.get(b"_error_code", b"UNKNOWN").decode(),
                                  box.get(b"_error_description", b"").decode(errors="replace"))

    def _pushed(self, box: dict[bytes, bytes]) -> None:
        name = box[b"_command"]
        if name == wire.Deliver.commandName:
            messages = wire.Deliver.parseArguments(amp.AmpBox(box), None)["messages"]
            for message in messages:
                message["received_at"] = time.time()
            self.pushed += messages
            flags = amp.ListOf(amp.Boolean()).toString([self.show] * len(messages))
            self.send_bytes(frame({b"_answer": box[b"_ask"], b"shown": flags}))
        elif b"_ask" in box:
            self.send_bytes(frame({b"_answer": box[b"_ask"]}))

    def drain(self, timeout: float) -> None:
        """Answer pushes until nothing arrives for ``timeout`` seconds."""
        try:
            while True:
                box = self.read_box(timeout)
                if b"_command" in box:
                    self._pushed(box)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(10.0)
