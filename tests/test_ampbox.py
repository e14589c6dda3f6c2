"""The one Twisted-free AMP codec (``claudepeers.wire.box``) held to Twisted's ``amp`` and the wire:
the same bytes, each side parses the other's boxes, long values chunk as ``wire.BigText`` does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from twisted.protocols import amp

from claudepeers.wire import box as ampbox

# Long keys and values are built from a short random part, so that hypothesis stays fast.

from claudepeers.wire import commands as wire

# Long keys and values are built from a short random part, so that hypothesis stays fast.
keys = st.binary(min_size=1, max_size=20) | st.builds(lambda b, n: (b * n)[:n], st.binary(min_size=1, max_size=4),
                                                      st.integers(ampbox.MAX_KEY - 3, ampbox.MAX_KEY))
values = st.binary(max_size=300) | st.builds(lambda b, n: (b * n)[:n], st.binary(min_size=1, max_size=4),
                                             st.integers(ampbox.MAX_VALUE - 3, ampbox.MAX_VALUE))
boxes = st.dictionaries(keys, values, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(boxes, max_size=4))
def test_encoding_is_twisteds_byte_for_byte_and_each_parses_the_other(original: list[dict]) -> None:
    """Our box (pairs in Twisted's sorted order) is AmpBox.serialize's bytes; both parsers agree."""
    ours = b"".join(ampbox.encode_box(sorted(box.items())) for box in original)
    assert ours == b"".join(amp.AmpBox(box).serialize() for box in original)
    assert [dict(box) for box in amp.parseString(ours)] == original
    assert ampbox.parse_boxes(ours) == original


def test_the_reader_reassembles_boxes_split_anywhere() -> None:
    """Boxes fed one byte at a time, or all at once, come out whole and in order."""
    data = ampbox.call_box("Attach", b"7", [(b"agent_pid", b"123"), (b"empty", b"")])
    data += ampbox.encode_box([(b"_answer", b"2")])
    reader = ampbox.BoxReader()
    split = [box for index in range(len(data)) for box in reader.feed(data[index:index + 1])]
    expected = [{b"_command": b"Attach", b"_ask": b"7", b"agent_pid": b"123", b"empty": b""}, {b"_answer": b"2"}]
    assert split == ampbox.parse_boxes(data) == expected and reader.pending == 0
    assert [dict(box) for box in amp.parseString(data)] == expected


def test_bounds_refuse_long_keys_and_values_on_both_sides() -> None:
    """Encoding refuses what AMP cannot carry; the reader refuses a key or value over its bounds
    as soon as the length arrives, before buffering the bytes."""
    with pytest.raises(ampbox.BoxError, match="key of 256 bytes"):
        ampbox.encode_box([(b"k" * 256, b"")])
    with pytest.raises(ampbox.BoxError, match="key of 0 bytes"):
        ampbox.pair(b"", b"v")
    with pytest.raises(ampbox.BoxError, match="value of 65536 bytes"):
        ampbox.encode_box([(b"k", b"v" * 0x10000)])
    with pytest.raises(ampbox.BoxError, match="key of 300 bytes"):
        ampbox.BoxReader().feed(b"\x01\x2c")
    with pytest.raises(ampbox.BoxError, match="value of 1000 bytes for key b'body'"):
        ampbox.BoxReader(max_value=999).feed(b"\x00\x04body\x03\xe8")
    with pytest.raises(ampbox.BoxError, match="incomplete"):
        ampbox.parse_boxes(b"\x00\x01k\x00")
    assert ampbox.encode_unchecked([(b"k" * 0x10001, b"")])[:2] == b"\x00\x01"


def test_values_are_encoded_as_the_wire_declares_them() -> None:
    """Integer, Float, Boolean, Unicode and ListOf bytes equal those of the wire's argument types."""
    attach = dict(wire.Attach.arguments)
    assert ampbox.integer(4242) == attach[b"agent_pid"].toString(4242)
    assert ampbox.floating(1764021600.37) == attach[b"agent_start"].toString(1764021600.37)
    ack = dict(wire.Acknowledge.arguments)[b"message_ids"]
    assert ampbox.integer_list([1, 22, 333]) == ack.toString([1, 22, 333])
    assert ampbox.list_of([ampbox.boolean(True), ampbox.boolean(False)]) == amp.ListOf(amp.Boolean()).toString([True, False])
    assert ampbox.text("h\u00e9") == amp.Unicode().toString("h\u00e9")
    assert ampbox.read_boolean({b"online": amp.Boolean().toString(True)}, b"online") is True
    assert dict(wire.FetchUnread.arguments).keys() == {b"limit"}
    assert dict(wire.Authenticate.arguments).keys() == {b"token"}
    assert dict(wire.Attach.response).keys() >= {b"online"}


@pytest.mark.parametrize("size", [0, 10, ampbox.CHUNK_BYTES, ampbox.CHUNK_BYTES + 1, 3 * ampbox.CHUNK_BYTES + 7])
def test_long_values_round_trip_with_wire_big_text(size: int) -> None:
    """Our chunks are BigText's (same keys, same bytes), BigText reads ours, we read its, over a real box."""
    value = ("\u00e9" * size)[:size] if size < 100 else "x" * size
    strings: dict = {}
    wire.BigText().toBox(b"body", strings, {"body": value}, None)
    assert dict(ampbox.split_chunks(b"body", value.encode())) == strings
    box = ampbox.parse_boxes(ampbox.encode_box([(b"_answer", b"1"), *ampbox.split_chunks(b"body", value.encode())]))[0]
    assert ampbox.big_text(box, b"body") == value
    objects: dict = {}
    wire.BigText().fromBox(b"body", dict(box), objects, None)
    assert objects["body"] == value


def test_a_chunked_json_value_is_read_back_entire() -> None:
    """A JSONValue over several chunks, written by the wire and framed by Twisted, reads back whole."""
    long_list = [{"id": n, "body": "x" * 1000} for n in range(100)]
    strings: dict = {}
    wire.JSONValue().toBox(b"messages", strings, {"messages": long_list}, None)
    assert ampbox.chunk_key(b"messages", 1) in strings
    [box] = ampbox.parse_boxes(amp.AmpBox(strings).serialize())
    assert ampbox.json_value(box, b"messages") == long_list
