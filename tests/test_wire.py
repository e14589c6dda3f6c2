"""The wire: BigText/JSONValue chunked AMP arguments and the commands, over real AMP pairs.

No sockets: ``twisted.test.iosim.connectedServerAndClient`` joins two real ``amp.AMP``
protocols with in-memory transports; ``pump.flush()`` moves the bytes. Box-level tests
call ``toBox``/``fromBox`` the way AMP itself does, to feed values a well-behaved sender
would never produce.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.broker import peers

from claudepeers.wire import commands as wire
from claudepeers.wire.commands import CHUNK_BYTES, MAX_BIG_TEXT_BYTES, BigText, JSONValue

AMP_VALUE_LIMIT = 0xFFFF


# --- a small command set for exercising the argument types -------------------------------


class EchoText(amp.Command):
    """Echo a BigText back as a BigText (both directions carry the big value)."""

    arguments = [(b"text", BigText())]
    response = [(b"text", BigText()), (b"received_bytes", amp.Integer())]


class EchoOptional(amp.Command):
    """Echo an optional BigText and an optional JSONValue."""

    arguments = [(b"text", BigText(optional=True)), (b"value", JSONValue(optional=True))]
    response = [(b"text", BigText(optional=True)), (b"value", JSONValue(optional=True))]


class EchoJSON(amp.Command):
    """Echo a JSONValue."""

    arguments = [(b"value", JSONValue())]
    response = [(b"value", JSONValue())]


class EchoServer(amp.AMP):
    """Answers the echo commands and the wire commands a test needs; records what came in."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.unread: list[dict[str, Any]] = []

    @EchoText.responder
    def echo_text(self, text: str) -> dict[str, Any]:
        self.received.append(("EchoText", {"text": text}))
        return {"text": text, "received_bytes": len(text.encode("utf-8"))}

    @EchoOptional.responder
    def echo_optional(self, text: str | None, value: Any) -> dict[str, Any]:
        self.received.append(("EchoOptional", {"text": text, "value": value}))
        return {"text": text, "value": value}

    @EchoJSON.responder
    def echo_json(self, value: Any) -> dict[str, Any]:
        self.received.append(("EchoJSON", {"value": value}))
        return {"value": value}

    @wire.Send.responder
    def send(self, to: str, body: str, client_key: str | None = None, reply_to: int | None = None) -> dict[str, Any]:
        self.received.append(("Send", {"to": to, "body": body}))
        if to == "nobody":
            raise wire.UnknownPeer("no peer is called 'nobody'; candidates: api, web")
        return {"message_id": 7, "status": "queued", "detail": "polls", "to_id": "abcd1234", "to_name": to}

    @wire.FetchUnread.responder
    def fetch_unread(self, limit: int | None) -> dict[str, Any]:
        return {"messages": self.unread, "more": 0}


def connected() -> tuple[amp.AMP, EchoServer, iosim.IOPump]:
    """A client AMP and an EchoServer joined by iosim."""
    client, server, pump = iosim.connectedServerAndClient(EchoServer, amp.AMP)
    return client, server, pump


def call(client: amp.AMP, pump: iosim.IOPump, command: type[amp.Command], **kwargs: Any) -> Any:
    """Call ``command``, pump until answered, return the result (or raise its failure)."""
    outcome: list[Any] = []
    client.callRemote(command, **kwargs).addBoth(outcome.append)
    pump.flush()
    assert outcome, "no answer after flushing the pump"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def to_box(argument: amp.Argument, name: bytes, value: Any) -> dict[bytes, bytes]:
    """The strings ``argument`` writes into a box for ``value``."""
    strings: dict[bytes, bytes] = {}
    argument.toBox(name, strings, {amp._wireNameToPythonIdentifier(name): value}, None)
    return strings


def from_box(argument: amp.Argument, name: bytes, strings: dict[bytes, bytes]) -> Any:
    """The value ``argument`` reads back from ``strings``."""
    objects: dict[str, Any] = {}
    argument.fromBox(name, dict(strings), objects, None)
    return objects[amp._wireNameToPythonIdentifier(name)]


# --- BigText ----------------------------------------------------------------------------


def test_big_text_larger_than_64k_round_trips_over_amp() -> None:
    """A 300 KB BigText crosses a real AMP pair both ways unchanged."""
    client, server, pump = connected()
    text = "".join(f"line {i:06d}\n" for i in range(25_000))
    assert len(text.encode()) > 4 * AMP_VALUE_LIMIT
    answer = call(client, pump, EchoText, text=text)
    assert server.received == [("EchoText", {"text": text})]
    assert answer["text"] == text
    assert answer["received_bytes"] == len(text.encode())


def test_big_text_multibyte_utf8_split_across_chunk_boundaries_round_trips() -> None:
    """Multi-byte UTF-8 (2, 3 and 4 bytes) whose chunk boundaries fall mid-character survives."""
    client, server, pump = connected()
    text = "é漢😀" * 30_000  # 9 bytes per repeat: boundaries at 60,000 bytes cut characters
    data = text.encode("utf-8")
    assert len(data) > 3 * CHUNK_BYTES
    boundaries = range(CHUNK_BYTES, len(data), CHUNK_BYTES)
    assert any((data[b] & 0xC0) == 0x80 for b in boundaries), "no chunk boundary cuts a character"
    answer = call(client, pump, EchoText, text=text)
    assert server.received[0][1]["text"] == text
    assert answer["text"] == text


def test_big_text_chunks_each_fit_in_one_amp_value() -> None:
    """Every key BigText writes holds at most CHUNK_BYTES (< 65,535) bytes, numbered from 1."""
    strings = to_box(BigText(), b"body", "x" * (3 * CHUNK_BYTES + 5))
    assert sorted(strings) == [b"body", b"body.1", b"body.2", b"body.3"]
    assert all(len(v) <= CHUNK_BYTES < AMP_VALUE_LIMIT for v in strings.values())
    assert len(strings[b"body.3"]) == 5


def test_big_text_short_value_is_encoded_like_amp_unicode() -> None:
    """A value under one chunk is a single key, byte-identical to amp.Unicode's encoding."""
    assert to_box(BigText(), b"summary", "héllo") == to_box(amp.Unicode(), b"summary", "héllo")


def test_big_text_exact_multiple_of_chunk_size_round_trips_without_empty_chunk() -> None:
    """A value of exactly two chunks writes two keys (no empty trailer) and reads back whole."""
    text = "a" * (2 * CHUNK_BYTES)
    strings = to_box(BigText(), b"body", text)
    assert sorted(strings) == [b"body", b"body.1"]
    assert from_box(BigText(), b"body", strings) == text


def test_big_text_empty_string_round_trips() -> None:
    """The empty string is a value, not a missing argument."""
    client, _, pump = connected()
    assert call(client, pump, EchoText, text="")["text"] == ""


def test_optional_big_text_and_json_none_round_trip() -> None:
    """Optional BigText/JSONValue arguments left out arrive as None."""
    client, server, pump = connected()
    answer = call(client, pump, EchoOptional, text=None, value=None)
    assert server.received == [("EchoOptional", {"text": None, "value": None})]
    assert answer == {"text": None, "value": None}


def test_big_text_rejects_a_non_string() -> None:
    """Passing bytes where text is expected is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="body"):
        to_box(BigText(), b"body", b"raw bytes")


def test_big_text_missing_required_argument_is_key_error() -> None:
    """A box without the argument at all raises KeyError naming it."""
    with pytest.raises(KeyError):
        from_box(BigText(), b"body", {b"other": b"x"})


def test_big_text_missing_middle_chunk_is_an_error() -> None:
    """A box whose chunk numbering has a gap (body, body.2 without body.1) is rejected, not truncated."""
    strings = to_box(BigText(), b"body", "z" * (3 * CHUNK_BYTES))
    del strings[b"body.1"]
    with pytest.raises(ValueError, match="body"):
        from_box(BigText(), b"body", strings)


def test_big_text_continuation_chunk_without_first_is_an_error() -> None:
    """Continuation chunks with no first chunk are rejected even for an optional argument."""
    strings = to_box(BigText(), b"body", "z" * (2 * CHUNK_BYTES))
    del strings[b"body"]
    with pytest.raises((ValueError, KeyError)):
        from_box(BigText(), b"body", strings)
    with pytest.raises(ValueError, match="body"):
        from_box(BigText(optional=True), b"body", strings)


def test_big_text_over_limit_from_the_wire_is_an_error() -> None:
    """Chunks adding up to more than MAX_BIG_TEXT_BYTES are refused while reassembling."""
    chunk = b"y" * CHUNK_BYTES
    count = MAX_BIG_TEXT_BYTES // CHUNK_BYTES + 2
    strings = {b"body": chunk}
    strings.update({b"body." + str(i).encode(): chunk for i in range(1, count)})
    with pytest.raises(ValueError, match=str(MAX_BIG_TEXT_BYTES)):
        from_box(BigText(), b"body", strings)


def test_big_text_exactly_at_limit_is_accepted() -> None:
    """A value of exactly MAX_BIG_TEXT_BYTES is still accepted (the limit is inclusive)."""
    text = "q" * MAX_BIG_TEXT_BYTES
    assert from_box(BigText(), b"body", to_box(BigText(), b"body", text)) == text


def test_big_text_over_limit_is_refused_by_the_sender() -> None:
    """callRemote with a value over MAX_BIG_TEXT_BYTES raises TooLong before sending anything."""
    client, server, pump = connected()
    with pytest.raises(amp.TooLong):
        client.callRemote(EchoText, text="w" * (MAX_BIG_TEXT_BYTES + 1))
    pump.flush()
    assert server.received == []
    assert call(client, pump, EchoText, text="still fine")["text"] == "still fine"


def test_big_text_invalid_utf8_from_the_wire_is_an_error() -> None:
    """Bytes that are not UTF-8 fail to decode rather than being silently replaced."""
    with pytest.raises(UnicodeDecodeError):
        from_box(BigText(), b"body", {b"body": b"\xff\xfe not utf-8"})


# --- JSONValue --------------------------------------------------------------------------


def test_json_value_round_trips_nested_data() -> None:
    """Dicts, lists, numbers, booleans, null and non-ASCII text survive a JSONValue round trip."""
    client, server, pump = connected()
    value = {"id": "ab12cd34", "n": 3, "f": 1.5, "ok": True, "none": None,
             "tags": ["α", "漢字", "😀"], "nested": {"empty": [], "obj": {}}}
    answer = call(client, pump, EchoJSON, value=value)
    assert server.received == [("EchoJSON", {"value": value})]
    assert answer["value"] == value


def test_json_value_larger_than_64k_round_trips() -> None:
    """A list of 1,000 peer-sized objects (well over 64 KiB as JSON) crosses both ways."""
    client, _, pump = connected()
    peers = [{"id": f"{i:08d}", "name": f"peer-{i}", "summary": "ü" * 100, "cwd": f"/home/u/repo{i}"}
             for i in range(1_000)]
    assert len(to_box(JSONValue(), b"value", peers)) > 2
    assert call(client, pump, EchoJSON, value=peers)["value"] == peers


def test_json_value_is_compact_utf8_json() -> None:
    """JSONValue writes compact JSON with raw UTF-8 (no spaces, no \\u escapes)."""
    assert to_box(JSONValue(), b"v", {"a": [1, "é"]}) == {b"v": '{"a":[1,"é"]}'.encode()}


def test_json_value_malformed_json_is_a_value_error() -> None:
    """A JSONValue that is not JSON raises ValueError (the broker answers InvalidArgument)."""
    with pytest.raises(ValueError):
        from_box(JSONValue(), b"v", {b"v": b"{not json"})


def test_json_value_unserialisable_value_is_refused_by_the_sender() -> None:
    """A value json cannot encode raises TypeError at the caller; nothing is sent."""
    client, server, pump = connected()
    with pytest.raises(TypeError):
        client.callRemote(EchoJSON, value={"when": object()})
    pump.flush()
    assert server.received == []


# --- the commands -----------------------------------------------------------------------


def test_send_with_a_200_kib_body_works_end_to_end() -> None:
    """wire.Send carrying a 200 KiB multi-byte body reaches the responder whole and is answered."""
    client, server, pump = connected()
    body = ("ünïcødé 漢字 " * 20_000)[: 200 * 1024]
    assert len(body.encode()) > 200 * 1024
    answer = call(client, pump, wire.Send, to="api", body=body)
    assert server.received == [("Send", {"to": "api", "body": body})]
    assert answer == {"message_id": 7, "status": "queued", "detail": "polls",
                      "to_id": "abcd1234", "to_name": "api", "thread_id": None}


def test_fetch_unread_answer_larger_than_64k_crosses_without_dropping_the_connection() -> None:
    """A FetchUnread answer of three 100 KB messages arrives whole; the connection stays up."""
    client, server, pump = connected()
    server.unread = [{"id": i, "body": f"{i}" * 100_000} for i in range(3)]
    answer = call(client, pump, wire.FetchUnread, limit=None)
    assert answer == {"messages": server.unread, "more": 0}
    assert not client.transport.disconnecting
    assert call(client, pump, EchoText, text="after")["text"] == "after"


def test_a_typed_error_reaches_the_caller_as_the_same_exception() -> None:
    """A responder raising UnknownPeer gives the caller wire.UnknownPeer with the message text."""
    client, _, pump = connected()
    with pytest.raises(wire.UnknownPeer, match="candidates: api, web"):
        call(client, pump, wire.Send, to="nobody", body="hi")


def test_unhandled_command_is_an_error_and_the_connection_keeps_serving() -> None:
    """A command the other side does not implement fails with UnhandledCommand; later calls work."""
    client, _, pump = connected()
    with pytest.raises(amp.UnhandledCommand):
        call(client, pump, wire.Ping)
    assert call(client, pump, EchoText, text="ok")["text"] == "ok"


ALL_COMMANDS = [value for value in vars(wire).values()
                if isinstance(value, type) and issubclass(value, amp.Command) and value is not amp.Command]


def test_every_command_maps_each_error_to_its_own_tag() -> None:
    """Within a command, error tags are distinct, so the caller can tell errors apart."""
    assert len(ALL_COMMANDS) >= 20
    for command in ALL_COMMANDS:
        tags = list(getattr(command, "errors", {}).values())
        assert len(tags) == len(set(tags)), command.__name__
        for error in getattr(command, "errors", {}):
            assert issubclass(error, wire.PeersError), (command.__name__, error)


def test_every_command_answering_a_peer_target_declares_the_peer_errors() -> None:
    """Commands that take a peer target (Send, KillPeer, Inbox) can answer UnknownPeer/AmbiguousPeer/PeerGone."""
    for command in (wire.Send, wire.KillPeer, wire.Inbox):
        for error in (wire.UnknownPeer, wire.AmbiguousPeer, wire.PeerGone):
            assert error in command.errors, (command.__name__, error.__name__)


def test_argument_names_fit_amp_keys_with_chunk_suffixes() -> None:
    """Every argument name, plus a chunk suffix, stays under AMP's 255-byte key limit."""
    for command in ALL_COMMANDS:
        for name, _ in list(command.arguments) + list(getattr(command, "response", [])):
            assert isinstance(name, bytes), (command.__name__, name)
            assert len(name + b".999") <= 255


def test_acknowledging_a_full_inbox_fits_in_one_amp_value() -> None:
    """Acknowledge/ShownElsewhere with 5,000 ten-digit ids (the default unread limit) stay under 64 KiB."""
    from claudepeers.common.settings import Limits

    ids = list(range(9_000_000_000, 9_000_000_000 + Limits().max_unread))
    for command in (wire.Acknowledge, wire.ShownElsewhere, wire.MessageState):
        strings = to_box(dict(command.arguments)[b"message_ids"], b"message_ids", ids)
        assert len(strings[b"message_ids"]) <= AMP_VALUE_LIMIT, command.__name__


def test_the_actor_never_pushes_more_than_a_deliver_may_carry() -> None:
    """The actor keeps its own copy of the batch limit (it does not import the wire): the same."""
    assert peers.MAX_PUSH_MESSAGES == wire.MAX_DELIVER_BATCH
