"""A blocking AMP client for the hook: a handful of commands over one socket, no reactor.

Importing Twisted costs a hook about 0.1 s on every prompt, so the hook speaks the few
commands it needs (``Authenticate``, ``Attach``, ``Whoami``, ``FetchUnread``,
``Acknowledge``, as declared in :mod:`claudepeers.wire`) itself. AMP's framing is small:
a box is a run of (2-byte length, key) (2-byte length, value) pairs ended by an empty key;
a call carries ``_command`` and ``_ask``, its answer ``_answer`` or ``_error`` with the
same tag. Values are encoded as the wire's argument types encode them (Integer: decimal,
Float: ``str``, Boolean: ``True``/``False``, ListOf: each element length-prefixed,
BigText/JSONValue: chunked over ``name``, ``name.1``, ...). ``tests/test_hooks_unit.py``
checks these encodings against Twisted's own parser and the wire's declarations.

Calls can be pipelined: :meth:`AmpSocket.send` writes several boxes at once, and the broker
answers them in order, so Attach + Whoami + FetchUnread cost one round trip.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Iterable, Sequence

Box = dict[bytes, bytes]
Pairs = Sequence[tuple[bytes, bytes]]

#: AMP's limits: keys up to 255 bytes, values up to 65,535.
MAX_KEY = 0xFF
MAX_VALUE = 0xFFFF


class BrokerUnreachable(Exception):
    """No broker accepted the connection, or it closed or went silent mid-call."""


class AmpError(Exception):
    """The broker answered a call with an AMP error (``code`` is the wire's error tag)."""

    def __init__(self, code: str, description: str) -> None:
        """An error answer: its tag (e.g. ``UNKNOWN_PEER``) and text."""
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


# --- encoding -------------------------------------------------------------------------


def encode_box(pairs: Pairs) -> bytes:
    """One AMP box: each key and value length-prefixed, ended by an empty key."""
    out = bytearray()
    for key, value in pairs:
        if not 0 < len(key) <= MAX_KEY:
            raise ValueError(f"AMP key {key!r} must be 1 to {MAX_KEY} bytes")
        if len(value) > MAX_VALUE:
            raise ValueError(f"AMP value of {key.decode()} is longer than {MAX_VALUE} bytes")
        out += struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value
    out += b"\x00\x00"
    return bytes(out)


def integer(value: int) -> bytes:
    """An ``amp.Integer`` value."""
    return b"%d" % (value,)


def floating(value: float) -> bytes:
    """An ``amp.Float`` value (Twisted writes ``str(value)``)."""
    return str(float(value)).encode("ascii")


def text(value: str) -> bytes:
    """An ``amp.Unicode`` value."""
    return value.encode("utf-8")


def integer_list(values: Iterable[int]) -> bytes:
    """An ``amp.ListOf(amp.Integer())`` value: each element length-prefixed."""
    out = bytearray()
    for value in values:
        encoded = integer(value)
        out += struct.pack("!H", len(encoded)) + encoded
    return bytes(out)


# --- decoding -------------------------------------------------------------------------


class BoxReader:
    """Splits a byte stream into AMP boxes."""

    def __init__(self) -> None:
        """An empty reader."""
        self._buffer = bytearray()
        self._box: Box = {}

    def feed(self, data: bytes) -> list[Box]:
        """Add received bytes; return the boxes completed by them."""
        self._buffer += data
        boxes: list[Box] = []
        offset = 0
        buffer = self._buffer
        while True:
            if len(buffer) - offset < 2:
                break
            (key_length,) = struct.unpack_from("!H", buffer, offset)
            if key_length == 0:
                offset += 2
                boxes.append(self._box)
                self._box = {}
                continue
            if len(buffer) - offset < 2 + key_length + 2:
                break
            key = bytes(buffer[offset + 2 : offset + 2 + key_length])
            (value_length,) = struct.unpack_from("!H", buffer, offset + 2 + key_length)
            start = offset + 4 + key_length
            if len(buffer) - start < value_length:
                break
            self._box[key] = bytes(buffer[start : start + value_length])
            offset = start + value_length
        del buffer[:offset]
        return boxes


def big_text(box: Box, name: bytes) -> str:
    """A BigText value: ``name``, ``name.1``, ``name.2``... joined and decoded."""
    parts = [box[name]]
    index = 1
    while (chunk := box.get(name + b"." + integer(index))) is not None:
        parts.append(chunk)
        index += 1
    return b"".join(parts).decode("utf-8")


def json_value(box: Box, name: bytes) -> Any:
    """A JSONValue: BigText holding JSON."""
    return json.loads(big_text(box, name))


def boolean(box: Box, name: bytes) -> bool:
    """An ``amp.Boolean`` value."""
    return box[name] == b"True"


# --- the connection -------------------------------------------------------------------


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
            data += encode_box([(b"_command", command.encode("ascii")), (b"_ask", tag), *arguments])
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
            for box in self._reader.feed(data):
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
