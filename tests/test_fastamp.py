"""LeanAMP speaks the same AMP as Twisted's amp.AMP: boxes, answers, errors, limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from claudepeers.wire import commands as wire
from claudepeers.wire.fastamp import LeanAMP, serialize


class Boom(Exception):
    """A declared error."""


class Crash(Exception):
    """An undeclared error."""


class Echo(amp.Command):
    """Every kind of argument the wire uses."""

    arguments = [
        (b"text", amp.Unicode()),
        (b"number", amp.Integer(optional=True)),
        (b"flags", amp.ListOf(amp.Boolean())),
        (b"big", wire.BigText()),
        (b"data", wire.JSONValue(optional=True)),
    ]
    response = [
        (b"text", amp.Unicode()),
        (b"number", amp.Integer(optional=True)),
        (b"flags", amp.ListOf(amp.Boolean())),
        (b"big", wire.BigText()),
        (b"data", wire.JSONValue(optional=True)),
    ]
    errors = {Boom: b"BOOM"}


class Fail(amp.Command):
    """Raises what it is told to."""

    arguments = [(b"kind", amp.Unicode())]
    response = [(b"count", amp.Integer())]
    errors = {Boom: b"BOOM"}


class Names(amp.Command):
    """Wire names that are no Python identifiers as they stand."""

    arguments = [(b"from", amp.Unicode()), (b"dash-name", amp.Integer()), (b"class", wire.BigText(optional=True))]
    response = [(b"from", amp.Unicode()), (b"dash-name", amp.Integer()), (b"class", wire.BigText(optional=True))]


def responders(base: type) -> type:
    """The same responders on ``base`` (LeanAMP or amp.AMP)."""

    class Responders(base):  # type: ignore[misc, valid-type]
        later: list[Deferred] = []

        @Echo.responder
        def echo(self, text: str, number: int | None, flags: list, big: str, data: Any) -> Any:
            answer = {"text": text, "number": number, "flags": flags, "big": big, "data": data}
            return answer if number != 7 else succeed(answer)  # a plain value and a Deferred

        @Names.responder
        def names(self, From: str, dash_name: int, Class: str | None) -> Any:  # noqa: N803 - Twisted's rule
            return {"From": From, "dash_name": dash_name, "Class": Class}

        @Fail.responder
        def fail_(self, kind: str) -> Any:
            if kind == "boom":
                raise Boom("declared")
            if kind == "crash":
                raise Crash("undeclared")
            if kind == "late-boom":
                d: Deferred = Deferred()
                self.later.append(d)
                return d
            return {}  # "count" is missing: the answer cannot be serialised

    return Responders


LeanSide = responders(LeanAMP)
TwistedSide = responders(amp.AMP)


def connected(server: type, client: type) -> tuple[Any, Any, iosim.IOPump]:
    """A server and a client over iosim."""
    return iosim.connectedServerAndClient(ServerClass=server, ClientClass=client)


def outcome(d: Deferred, pump: iosim.IOPump) -> Any:
    """Pump until ``d`` fires; its result or Failure."""
    results: list[Any] = []
    d.addBoth(results.append)
    pump.flush()
    assert results, "no answer"
    return results[0]


ECHO = dict(text="héllo", flags=[True, False], big="x" * 150_000, data={"a": [1, 2]})


@pytest.mark.parametrize("server, client", [(LeanSide, TwistedSide), (TwistedSide, LeanSide), (LeanSide, LeanSide)])
def test_calls_and_answers_match_twisted_both_ways(server: type, client: type) -> None:
    """Every argument kind (chunked BigText included) round-trips in each pairing, sync or not."""
    for number in (None, 3, 7):
        _, caller, pump = connected(server, client)
        answer = outcome(caller.callRemote(Echo, number=number, **ECHO), pump)
        assert answer == {**ECHO, "number": number}
    names = {"From": "me", "dash_name": 3, "Class": "c"}
    assert outcome(caller.callRemote(Names, **names), pump) == names  # Twisted's rule for names


@pytest.mark.logs_errors  # AMP logs an undeclared error it answers as UNKNOWN, by design
@pytest.mark.parametrize("server", [LeanSide, TwistedSide])
def test_errors_travel_as_twisted_sends_them(server: type) -> None:
    """Declared errors keep the connection; undeclared ones and bad answers end it; unknown
    commands and missing arguments are answered as Twisted answers them."""
    _, caller, pump = connected(server, LeanSide)
    assert outcome(caller.callRemote(Fail, kind="boom"), pump).check(Boom)
    unhandled = outcome(caller.callRemoteString(b"Nope"), pump)
    assert unhandled.check(amp.UnhandledCommand)
    assert outcome(caller.callRemote(Echo, **ECHO), pump)["text"] == "héllo"
    assert outcome(caller.callRemote(Fail, kind="crash"), pump).check(amp.UnknownRemoteError)
    assert caller.transport is None  # the connection was dropped (AMP forgets its transport)

    _, caller, pump = connected(server, LeanSide)
    assert outcome(caller.callRemote(Fail, kind="answer-with-junk"), pump).check(amp.UnknownRemoteError)

    _, caller, pump = connected(server, LeanSide)
    missing = outcome(caller.callRemoteString(b"Fail"), pump)  # "kind" is missing: an undeclared KeyError
    assert missing.check(amp.RemoteAmpError) and missing.value.errorCode == amp.UNKNOWN_ERROR_CODE
    assert caller.transport is None

    server_side, caller, pump = connected(server, LeanSide)
    late = caller.callRemote(Fail, kind="late-boom")
    pump.flush()
    server_side.later.pop().errback(Boom("later"))
    assert outcome(late, pump).check(Boom)


@pytest.mark.parametrize("client", [LeanSide, TwistedSide])
def test_caller_errors_fail_the_call_without_sending(client: type) -> None:
    """An unknown argument or a missing one fails the call locally with InvalidSignature,
    the same words from both; the connection goes on."""
    server, caller, pump = connected(LeanSide, client)
    unknown = outcome(caller.callRemote(Echo, nonsense=1, **ECHO), pump)
    missing = outcome(caller.callRemote(Echo, text="only"), pump)
    assert unknown.check(amp.InvalidSignature) and missing.check(amp.InvalidSignature)
    assert str(missing.value) == "forgot flags, big for b'Echo'"  # Twisted's words
    assert outcome(caller.callRemote(Echo, **ECHO), pump)["text"] == "héllo"


class Recorder(LeanAMP):
    """Records the boxes the parser produces, and why it stopped receiving them."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: list[dict[bytes, bytes]] = []
        self.stopped: Failure | None = None

    def ampBoxReceived(self, box: amp.AmpBox) -> None:  # noqa: N802 - Twisted's name
        """Keep the box."""
        self.boxes.append(dict(box))

    def stopReceivingBoxes(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        """Keep the reason."""
        self.stopped = reason
        super().stopReceivingBoxes(reason)


boxes = st.lists(
    st.dictionaries(st.binary(min_size=1, max_size=8), st.binary(max_size=300), min_size=1, max_size=5),
    min_size=1, max_size=6,
)


@given(boxes=boxes, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_parser_splits_a_stream_cut_anywhere_like_twisted(boxes: list[dict[bytes, bytes]], cuts: list[int]) -> None:
    """Boxes arrive whole and in order however the stream is cut into reads."""
    stream = b"".join(amp.AmpBox(box).serialize() for box in boxes)
    assert b"".join(serialize(box) for box in boxes) == stream
    recorder = Recorder()
    recorder.makeConnection(StringTransport())
    at = 0
    for cut in sorted(set(c for c in cuts if c < len(stream))):
        recorder.dataReceived(stream[at:cut])
        at = cut
    recorder.dataReceived(stream[at:])
    assert recorder.boxes == boxes


def test_a_key_longer_than_255_bytes_drops_the_connection_with_too_long() -> None:
    """As in Twisted: a key length above 255 closes the connection, reported as TooLong."""
    recorder = Recorder()
    transport = StringTransport()
    recorder.makeConnection(transport)
    recorder.dataReceived(b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00")
    assert transport.disconnecting and recorder.boxes == []
    recorder.connectionLost(Failure(ConnectionDone()))
    assert recorder.stopped is not None and recorder.stopped.check(amp.TooLong)


def test_a_box_over_its_bounds_is_dropped_before_it_is_buffered() -> None:
    """With max_box_bytes / max_box_keys set, a box that grows past them closes the
    connection at the string that would cross the bound; boxes within them arrive."""
    for limits, stream in (
        ((100, 50), b"\x00\x01k\x00\xc8" + b"v" * 200),  # one value too long for the byte bound
        ((10_000, 3), b"".join(b"\x00\x01" + bytes([65 + i]) + b"\x00\x01v" for i in range(4))),  # a 4th key
    ):
        recorder = Recorder()
        recorder.max_box_bytes, recorder.max_box_keys = limits
        transport = StringTransport()
        recorder.makeConnection(transport)
        recorder.dataReceived(serialize({b"a": b"1"}))
        recorder.dataReceived(stream[:7])  # the refusal comes with the length, not the whole value
        recorder.dataReceived(stream[7:])
        assert recorder.boxes == [{b"a": b"1"}] and transport.disconnecting
        recorder.dataReceived(serialize({b"b": b"2"}))  # nothing more is read
        assert recorder.boxes == [{b"a": b"1"}]


def test_serialize_refuses_what_twisted_refuses() -> None:
    """Text keys or values and values over 65,535 bytes are refused before anything is sent."""
    with pytest.raises(TypeError):
        serialize({"text": b"x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        serialize({b"key": "text"})  # type: ignore[dict-item]
    with pytest.raises(amp.TooLong):
        serialize({b"key": b"x" * 65_536})


def test_the_one_private_name_read_still_means_what_fastamp_reads() -> None:
    """fastamp reads ``CommandLocator._commandDispatch`` (wire name -> (command, function)), the
    table ``Command.responder`` fills; a Twisted that moves or reshapes it fails here, loudly.
    Any other private name of Twisted's in the fast AMP's modules fails here too."""
    import inspect
    import re

    from claudepeers.wire import fastamp, schemas

    assert TwistedSide._commandDispatch[b"Echo"] == (Echo, vars(TwistedSide)["echo"])
    assert LeanSide._commandDispatch[b"Fail"] == (Fail, vars(LeanSide)["fail_"])
    private = set()
    for module in (fastamp, schemas):
        private |= set(re.findall(r"\bamp\._\w+|\._[a-zA-Z]\w*", inspect.getsource(module)))
    ours = {"._commandDispatch"} | {name for name in private if name.lstrip(".").startswith(
        ("_unparsed", "_parsing", "_partial", "_arrived", "_responders", "_box_", "_refuse", "_questions",
         "_asked", "_no_more", "_parse", "_command_received", "_answer", "_emit", "_question", "_ask",
         "_SCHEMAS"))}
    assert private <= ours, sorted(private - ours)


def test_start_tls_is_answered_as_unhandled() -> None:
    """Protocol switching is not supported: StartTLS gets Twisted's unhandled-command answer."""
    _, caller, pump = connected(LeanSide, LeanSide)
    assert outcome(caller.callRemoteString(b"StartTLS"), pump).check(amp.UnhandledCommand)
    assert outcome(caller.callRemote(Echo, **ECHO), pump)["text"] == "héllo"


@pytest.mark.parametrize("key", [b"_answer", b"_error"])
def test_an_answer_to_no_question_drops_the_connection_without_a_traceback(key: bytes) -> None:
    """As in Twisted the connection goes; unlike Twisted's KeyError, only a warning is logged."""
    recorder = LeanSide()
    transport = StringTransport()
    recorder.makeConnection(transport)
    recorder.dataReceived(serialize({key: b"7", b"_error_code": b"X", b"_error_description": b"d"}))
    assert transport.disconnecting
