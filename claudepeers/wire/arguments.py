"""AMP argument types of the wire: long text chunked over keys, and JSON values.

AMP limits one value to 65,535 bytes; :class:`BigText` splits a long value over numbered
keys (``name``, ``name.1``, ``name.2``...) in the one layout the Twisted-free clients use too
(:mod:`claudepeers.wire.box`), so that a 32 KiB body in multi-byte UTF-8, or a list of a
thousand peers, crosses safely. Imports nothing of ours but that codec.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.protocols import amp

# BigText chunks as the Twisted-free clients do: one layout, CHUNK_BYTES each, kept in ampbox.
from claudepeers.wire.box import CHUNK_BYTES, chunk_key, split_chunks  # noqa: F401 - CHUNK_BYTES re-exported

#: The largest BigText value accepted from the wire (bounds a hostile sender's memory).
MAX_BIG_TEXT_BYTES = 8 * 1024 * 1024
#: The largest box either end accepts (fastamp's LeanAMP checks it before buffering): the
#: largest chunked value with room for the other arguments, and keys enough for any command
#: (a dict of tiny keys costs ~150 bytes each: this caps it at a few MB).
BOUND_BOX_BYTES = MAX_BIG_TEXT_BYTES + 1024 * 1024
BOUND_BOX_KEYS = 16384


class BigText(amp.Argument):
    """A unicode string of any length up to ``MAX_BIG_TEXT_BYTES``, chunked over keys."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Write the value as ``name``, ``name.1``, ... each at most CHUNK_BYTES long."""
        value = self.retrieve(objects, amp._wireNameToPythonIdentifier(name), proto)
        if self.optional and value is None:
            return
        if not isinstance(value, str):
            raise TypeError(f"{name.decode()} must be a string, not {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > MAX_BIG_TEXT_BYTES:
            raise amp.TooLong(False, True, data[:40], name)
        strings.update(split_chunks(name, data))

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Reassemble the chunks; reject values whose chunks are missing or too many."""
        key = amp._wireNameToPythonIdentifier(name)
        first = strings.pop(name, None)
        if first is None:
            if _chunk_keys(name, strings):
                raise ValueError(f"{name.decode()} has continuation chunks but no first chunk")
            if self.optional:
                objects[key] = None
                return
            raise KeyError(name)
        parts = [first]
        total = len(first)
        index = 1
        while True:
            chunk = strings.pop(chunk_key(name, index), None)
            if chunk is None:
                break
            total += len(chunk)
            if total > MAX_BIG_TEXT_BYTES:
                raise ValueError(f"{name.decode()} is longer than {MAX_BIG_TEXT_BYTES} bytes")
            parts.append(chunk)
            index += 1
        if _chunk_keys(name, strings):
            # A gap in the numbering: without this check the value would be silently cut short.
            raise ValueError(f"{name.decode()} is missing chunk {index} of a chunked value")
        objects[key] = b"".join(parts).decode("utf-8")


def _chunk_keys(name: bytes, strings: dict) -> list[bytes]:
    """Keys of ``strings`` that look like continuation chunks of ``name`` (``name.N``)."""
    prefix = name + b"."
    return [k for k in strings if k.startswith(prefix) and k[len(prefix):].isdigit()]


#: One encoder for every value: json.dumps with options builds a new encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JSONValue(BigText):
    """Any JSON-serialisable value, carried as BigText."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Serialise the value to compact JSON before chunking."""
        key = amp._wireNameToPythonIdentifier(name)
        if key in objects and not (self.optional and objects[key] is None):
            objects[key] = _ENCODE(objects[key])
        super().toBox(name, strings, objects, proto)

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        """Parse the JSON after reassembly; malformed JSON is a ValueError."""
        super().fromBox(name, strings, objects, proto)
        key = amp._wireNameToPythonIdentifier(name)
        if objects[key] is not None:
            objects[key] = json.loads(objects[key])
