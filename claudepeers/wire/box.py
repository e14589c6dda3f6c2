"""The one AMP box codec of claude-peers, without Twisted: framing, values, long-value chunks.

Processes that never start a reactor speak AMP through it: the prompt hooks (importing
Twisted would cost every prompt about 0.1 s), the benchmarks' load generators (which must
leave the cores to the broker they measure) and the tests' raw clients. ``wire.BigText``
chunks its values with :func:`split_chunks` too, so both sides agree on one layout.
``tests/test_ampbox.py`` holds it to Twisted's ``amp``: the same bytes, each side parses
the other's boxes, chunked values round-trip with ``wire.BigText``.

The framing: a box is a run of (2-byte big-endian key length, key, 2-byte value length,
value) pairs ended by an empty key; a call carries ``_command`` and ``_ask``, its answer
``_answer`` or ``_error`` (with ``_error_code`` and ``_error_description``) and the same
tag. Values are encoded as the wire's argument types encode them: Integer as decimal
digits, Float as ``str``, Boolean as ``True``/``False``, Unicode as UTF-8, ``ListOf`` as
each element length-prefixed, BigText/JSONValue over ``name``, ``name.1``, ``name.2``...
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

Box = dict[bytes, bytes]
Pairs = Iterable[tuple[bytes, bytes]]

#: AMP's limits (``amp.MAX_KEY_LENGTH``, ``amp.MAX_VALUE_LENGTH``).
MAX_KEY = 0xFF
MAX_VALUE = 0xFFFF
#: Bytes per chunk of a long value: below MAX_VALUE, with room for nothing else to matter.
CHUNK_BYTES = 60_000
#: The two zero bytes (an empty key) that end a box.
END = b"\x00\x00"


class BoxError(ValueError):
    """A box that AMP cannot carry or that a reader refuses (a key or value too long)."""


# --- encoding -------------------------------------------------------------------------


def pair(key: bytes, value: bytes) -> bytes:
    """One key/value pair of a box, length-prefixed; BoxError when either is too long."""
    if not 0 < len(key) <= MAX_KEY:
        raise BoxError(f"AMP key of {len(key)} bytes (1 to {MAX_KEY} allowed): {key[:40]!r}")
    if len(value) > MAX_VALUE:
        raise BoxError(f"AMP value of {len(value)} bytes for key {key[:40]!r} (at most {MAX_VALUE})")
    return len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


def encode_box(pairs: Pairs) -> bytes:
    """A whole box from its (key, value) pairs, in their order, with the ending empty key."""
    return b"".join([pair(key, value) for key, value in pairs]) + END


def encode_unchecked(pairs: Pairs) -> bytes:
    """A box with lengths taken modulo 2**16 and no checks: for fuzzers that want to break AMP."""
    return b"".join([(len(k) & 0xFFFF).to_bytes(2, "big") + k + (len(v) & 0xFFFF).to_bytes(2, "big") + v
                     for k, v in pairs]) + END


def length_prefixed(value: bytes) -> bytes:
    """``value`` with its 2-byte length before it (a pair's value, or a ListOf element)."""
    return len(value).to_bytes(2, "big") + value


def integer(value: int) -> bytes:
    """An ``amp.Integer`` value."""
    return b"%d" % (value,)


def floating(value: float) -> bytes:
    """An ``amp.Float`` value (Twisted writes ``str(value)``)."""
    return str(float(value)).encode("ascii")


def text(value: str) -> bytes:
    """An ``amp.Unicode`` value."""
    return value.encode("utf-8")


def boolean(value: bool) -> bytes:
    """An ``amp.Boolean`` value."""
    return b"True" if value else b"False"


def list_of(elements: Iterable[bytes]) -> bytes:
    """An ``amp.ListOf`` value from already-encoded elements."""
    return b"".join([length_prefixed(element) for element in elements])


def integer_list(values: Iterable[int]) -> bytes:
    """An ``amp.ListOf(amp.Integer())`` value."""
    return list_of(integer(value) for value in values)


# --- long values ----------------------------------------------------------------------


def chunk_key(key: bytes, index: int) -> bytes:
    """The key of chunk ``index`` (1, 2, ...) of a long value; chunk 0 is ``key`` itself."""
    return key + b"." + b"%d" % (index,)


def split_chunks(key: bytes, data: bytes, size: int = CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """The pairs of a BigText value: ``key``, ``key.1``, ... of ``size`` bytes each."""
    pairs = [(key, data[:size])]
    for index, start in enumerate(range(size, len(data), size), 1):
        pairs.append((chunk_key(key, index), data[start : start + size]))
    return pairs


def join_chunks(box: Box, key: bytes) -> bytes:
    """A BigText value reassembled from ``box`` (KeyError when ``key`` is absent)."""
    first = box[key]
    if chunk_key(key, 1) not in box:  # the common case: one chunk
        return first
    parts = [first]
    index = 1
    while (chunk := box.get(chunk_key(key, index))) is not None:
        parts.append(chunk)
        index += 1
    return b"".join(parts)


def big_text(box: Box, key: bytes) -> str:
    """A BigText value as text."""
    return join_chunks(box, key).decode("utf-8")


def json_value(box: Box, key: bytes) -> Any:
    """A JSONValue: BigText holding JSON."""
    return json.loads(join_chunks(box, key))


def read_boolean(box: Box, key: bytes) -> bool:
    """An ``amp.Boolean`` value of ``box``."""
    return box[key] == b"True"


# --- decoding -------------------------------------------------------------------------


class BoxReader:
    """Incremental parser: feed it what the socket gave, get the complete boxes back.

    A key longer than ``max_key`` or a value longer than ``max_value`` raises BoxError as
    soon as its length arrives, before its bytes are buffered (Twisted's parser drops the
    connection on a long key the same way); the reader is then unusable.
    """

    __slots__ = ("_pending", "_max_key", "_max_value")

    def __init__(self, max_key: int = MAX_KEY, max_value: int = MAX_VALUE) -> None:
        """An empty reader with these bounds (AMP's own by default)."""
        self._pending = b""
        self._max_key = max_key
        self._max_value = max_value

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete box are held."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[Box]:
        """Every box completed by ``data``; an incomplete tail is kept for the next call."""
        buf = self._pending + data if self._pending else data
        boxes: list[Box] = []
        size = len(buf)
        pos = 0
        start = 0  # where the box being parsed began: kept (and parsed again) if incomplete
        box: Box = {}
        max_key, max_value = self._max_key, self._max_value
        while pos + 2 <= size:
            key_length = buf[pos] << 8 | buf[pos + 1]
            if key_length == 0:  # the empty key: end of box
                boxes.append(box)
                box = {}
                pos = start = pos + 2
                continue
            if key_length > max_key:
                raise BoxError(f"AMP key of {key_length} bytes (at most {max_key})")
            key_end = pos + 2 + key_length
            if key_end + 2 > size:
                break
            value_length = buf[key_end] << 8 | buf[key_end + 1]
            if value_length > max_value:
                raise BoxError(f"AMP value of {value_length} bytes for key {buf[pos + 2:key_end][:40]!r} "
                               f"(at most {max_value})")
            value_end = key_end + 2 + value_length
            if value_end > size:
                break
            box[buf[pos + 2 : key_end]] = buf[key_end + 2 : value_end]
            pos = value_end
        self._pending = buf[start:]
        return boxes


def parse_boxes(data: bytes) -> list[Box]:
    """All the boxes of ``data``, which must hold nothing more (BoxError on a partial box)."""
    reader = BoxReader()
    boxes = reader.feed(data)
    if reader.pending:
        raise BoxError(f"{reader.pending} bytes of an incomplete AMP box")
    return boxes


def call_box(command: str, tag: bytes | None, arguments: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A call of ``command`` (asking for an answer under ``tag`` unless it is None)."""
    head = [(b"_command", command.encode("ascii"))] + ([(b"_ask", tag)] if tag is not None else [])
    return encode_box([*head, *arguments])
