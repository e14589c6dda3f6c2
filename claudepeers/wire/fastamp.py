"""AMP with less work per box: Twisted's AMP on the wire, flattened in the code.

The broker handles several boxes per message and thousands of messages a second.
Twisted's ``amp.AMP`` spends most of a box's time in generic machinery: it parses a box
one string at a time through three receiver layers, builds a new responder (a bound
method and two closures) for every command received, normalises every argument name
on every call, copies boxes and chains six or seven callbacks per answer.

:class:`LeanAMP` speaks exactly the same wire (the same boxes, commands, answers and
errors; it interoperates with ``amp.AMP`` and is checked against it in
``tests/test_fastamp.py``), and does that work once per command class (a compiled
:class:`Schema`) or in one tight loop:

- :meth:`LeanAMP.dataReceived` splits boxes in a single loop (key lengths above 255
  drop the connection with ``TooLong``, as in Twisted; so does a box past its bounds);
- responders are built once per connection and command, parse their arguments through
  the command's schema, and answer without a Deferred when the responder returns a
  plain value;
- :meth:`LeanAMP.callRemote` builds and parses boxes through the same schemas.

Not supported, because claude-peers uses none of them: protocol switching and StartTLS,
and commands with positional arguments (``callRemote`` hands those to Twisted's code).
"""

from __future__ import annotations

import sys
from types import MethodType
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.protocols import amp
from twisted.python.failure import Failure

_ASK = amp.ASK
_ANSWER = amp.ANSWER
_COMMAND = amp.COMMAND
_ERROR = amp.ERROR


class _Box(amp.AmpBox):
    """An AmpBox made without ``AmpBox.__init__``'s scan for text keys: every box made
    here gets bytes keys by construction, and that scan was a tenth of the broker's time."""

    __slots__: list[str] = []

    def __init__(self) -> None:  # noqa: D107 - an empty dict needs no initialisation
        pass


def _error_box(failure: Failure, ask: bytes) -> amp.AmpBox:
    """The answer to a failed command, as BoxDispatcher._commandReceived makes it: declared
    errors travel and keep the connection; anything else ends it (QuitBox) and is logged."""
    if failure.check(amp.RemoteAmpError):
        error = failure.value
        description = error.description
        if isinstance(description, str):
            description = description.encode("utf-8", "replace")
        box = amp.QuitBox() if error.fatal else amp.AmpBox()
        code = error.errorCode
    else:
        box = amp.QuitBox()
        amp._log.failure("while receiving response to command", failure)
        code, description = amp.UNKNOWN_ERROR_CODE, b"Unknown Error"
    box[_ERROR] = ask
    box[amp.ERROR_DESCRIPTION] = description
    box[amp.ERROR_CODE] = code
    return box


def _python_name(wire_name: bytes) -> str:
    """The keyword a wire name is passed as, by Twisted's rule: dashes become underscores,
    a Python keyword is capitalised (``from`` -> ``From``)."""
    name = wire_name.replace(b"-", b"_").decode("ascii")
    return name.title() if name in amp.PYTHON_KEYWORDS else name


def _plain(argument: amp.Argument) -> bool:
    """Whether ``argument`` converts one value with the base class's box handling."""
    kind = type(argument)
    return kind.fromBox is amp.Argument.fromBox and kind.toBox is amp.Argument.toBox


class Schema:
    """One argument list (a command's arguments or its response), compiled once.

    Plain arguments (one key, one value) are converted inline; arguments with their own
    box handling (``wire.BigText`` chunks a value over several keys) keep it.
    """

    def __init__(self, arguments: list[tuple[bytes, amp.Argument]]) -> None:
        self.plain: list[tuple[bytes, str, amp.Argument]] = []
        self.custom: list[tuple[bytes, str, amp.Argument]] = []
        for wire_name, argument in arguments:
            entry = (wire_name, _python_name(wire_name), argument)
            (self.plain if _plain(argument) else self.custom).append(entry)
        self.names = frozenset(name for _, name, _ in self.plain + self.custom)
        #: Python names of the arguments that must be given, in declaration order.
        self.required = [name for wire_name, argument in arguments if not argument.optional
                         for name in [_python_name(wire_name)]]

    def parse(self, box: dict[bytes, bytes], proto: Any) -> dict[str, Any]:
        """Values from a received box; KeyError names a missing argument, as Twisted's does."""
        objects: dict[str, Any] = {}
        for wire_name, name, argument in self.plain:
            value = box.get(wire_name)
            if value is None:
                if not argument.optional:
                    raise KeyError(wire_name)
                objects[name] = None
            else:
                objects[name] = argument.fromStringProto(value, proto)
        if self.custom:
            strings = dict(box)  # custom arguments pop the keys they read
            for wire_name, _, argument in self.custom:
                argument.fromBox(wire_name, strings, objects, proto)
        return objects

    def build(self, objects: dict[str, Any], proto: Any, box: amp.AmpBox) -> amp.AmpBox:
        """Fill ``box`` from values; a missing required value is a KeyError, as in Twisted."""
        for wire_name, name, argument in self.plain:
            value = objects.get(name)
            if value is None:
                if argument.optional:
                    continue
                if name not in objects:
                    raise KeyError(name)
            box[wire_name] = argument.toStringProto(value, proto)
        if self.custom:
            values = dict(objects)  # custom arguments may replace what they serialise
            for wire_name, _, argument in self.custom:
                argument.toBox(wire_name, box, values, proto)
        return box


class CommandSchemas:
    """A command's compiled arguments and response, and how its error answers are read."""

    def __init__(self, command: type[amp.Command]) -> None:
        self.command = command
        self.arguments = Schema(command.arguments)
        self.response = Schema(command.response)

    def remote_error(self, failure: Failure) -> Failure:
        """An error answer as the exception type the command declares for its code."""
        failure.trap(amp.RemoteAmpError)
        error = failure.value
        return Failure(self.command.reverseErrors.get(error.errorCode, amp.UnknownRemoteError)(error.description))


_SCHEMAS: dict[type[amp.Command], CommandSchemas] = {}


def schemas(command: type[amp.Command]) -> CommandSchemas:
    """The compiled schemas of ``command`` (built on first use)."""
    found = _SCHEMAS.get(command)
    if found is None:
        found = _SCHEMAS[command] = CommandSchemas(command)
    return found


def serialize(box: dict[bytes, bytes]) -> bytes:
    """A box's wire form; identical to ``AmpBox.serialize`` (keys sorted, same errors)."""
    parts = []
    for key in sorted(box):
        value = box[key]
        if type(key) is not bytes:
            raise TypeError(f"Unicode key not allowed: {key!r}")
        if type(value) is not bytes:
            raise TypeError(f"Unicode value for key {key!r} not allowed: {value!r}")
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        parts += (len(key).to_bytes(2, "big"), key, len(value).to_bytes(2, "big"), value)
    parts.append(b"\x00\x00")
    return b"".join(parts)


class LeanAMP(amp.AMP):
    """``amp.AMP`` with the per-box paths flattened (see the module docstring)."""

    _unparsed = b""
    _parsing = False
    _partial_box: amp.AmpBox | None = None
    _partial_key: bytes | None = None
    _arrived_while_parsing: list[bytes] | None = None
    _responders: dict[bytes, Callable[[amp.AmpBox], Any]] | None = None
    #: The largest box (keys and values with their 2-byte lengths) and the most keys; checked
    #: before a string is buffered (see boxTooLarge). Unbounded by default, as in Twisted.
    max_box_bytes: int = sys.maxsize
    max_box_keys: int = sys.maxsize
    _box_size = 0
    _box_keys = 0
    _refused = False

    # --- receiving boxes ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into boxes (one loop; state kept between reads)."""
        if self._parsing:
            # A responder fed us more bytes (only test transports do): parse them after these.
            if self._arrived_while_parsing is None:
                self._arrived_while_parsing = []
            self._arrived_while_parsing.append(data)
            return
        self._parsing = True
        try:
            self._parse(data)
            while self._arrived_while_parsing:
                later, self._arrived_while_parsing = self._arrived_while_parsing, None
                self._parse(b"".join(later))
        finally:
            self._parsing = False

    def _parse(self, data: bytes) -> None:
        if self._refused:
            return
        if self._unparsed:
            data = self._unparsed + data
        end = len(data)
        at = 0
        box, key = self._partial_box, self._partial_key
        size, keys = self._box_size, self._box_keys
        limit, key_limit = self.max_box_bytes, self.max_box_keys
        receiver = self.boxReceiver
        try:
            while end - at >= 2:
                length = (data[at] << 8) | data[at + 1]
                if key is None:
                    if length == 0:  # end of a box
                        at += 2
                        complete, box = box, None
                        size = keys = 0
                        receiver.ampBoxReceived(complete if complete is not None else _Box())
                        # The bounds may change with a box (an Authenticate, a Register).
                        limit, key_limit = self.max_box_bytes, self.max_box_keys
                        continue
                    if length > amp.MAX_KEY_LENGTH:
                        at, box = end, None
                        self.lengthLimitExceeded(length)
                        return
                    if keys >= key_limit:
                        at, box, size, keys = end, None, 0, 0
                        return self._refuse_box(f"a box of more than {key_limit} keys")
                if size + 2 + length > limit:
                    at, box, size, keys = end, None, 0, 0
                    return self._refuse_box(f"a box of more than {limit} bytes")
                start = at + 2
                if end - start < length:
                    break
                at = start + length
                size += 2 + length
                if key is None:
                    key = data[start:at]
                    keys += 1
                    if box is None:
                        box = _Box()
                else:
                    box[key] = data[start:at]  # type: ignore[index]
                    key = None
        finally:
            # Kept for the next read (also when a receiver raised): at most one incomplete
            # length prefix and string (< 64 KiB), and the box and key it belongs to.
            self._unparsed = data[at:]
            self._partial_box, self._partial_key = box, key
            self._box_size, self._box_keys = size, keys

    def _refuse_box(self, what: str) -> None:
        self._refused = True  # the rest of the stream is not read
        self.boxTooLarge(what)

    def boxTooLarge(self, what: str) -> None:  # noqa: N802 - AMP's style
        """A box grew past ``max_box_bytes`` or ``max_box_keys``: drop the connection."""
        if self.transport is not None:
            self.transport.loseConnection()

    # --- answering commands --------------------------------------------------------------------

    def locateResponder(self, name: bytes) -> Any:
        """A responder built once per connection and command (Twisted builds one per box)."""
        responders = self._responders
        if responders is None:
            responders = self._responders = {}
        responder = responders.get(name)
        if responder is None:
            entry = self._commandDispatch.get(name)
            if entry is None:
                return super().locateResponder(name)
            command, function = entry
            responder = responders[name] = _responder(self, schemas(command), MethodType(function, self))
        return responder

    def _commandReceived(self, box: amp.AmpBox) -> None:
        ask = box.get(_ASK)
        responder = self.locator.locateResponder(box[_COMMAND])
        if responder is None:
            result: Any = fail(amp.RemoteAmpError(
                amp.UNHANDLED_ERROR_CODE, f"Unhandled Command: {box[_COMMAND]!r}", False,
                local=Failure(amp.UnhandledCommand()),
            ))
        else:
            try:
                result = responder(box)
            except BaseException:
                result = fail()
        if not isinstance(result, Deferred):
            if ask is not None:
                self._answer(result, ask)
            return
        if ask is None:
            result.addErrback(self.unhandledError)
        else:
            # One pair of callbacks; each hands its own failures to unhandledError.
            result.addCallbacks(self._answer, self._answer_error, callbackArgs=(ask,), errbackArgs=(ask,))

    def responderFailed(self, failure: Failure, command: bytes) -> Failure:  # noqa: N802 - AMP's style
        """A responder failed with an error its command does not declare: what to answer.

        Twisted's answer (kept here) is an unknown error that ends the connection; a
        subclass may turn the failure into a declared error instead.
        """
        return failure

    def _answer(self, answer: amp.AmpBox, ask: bytes) -> None:
        try:
            answer[_ANSWER] = ask
            self._emit(answer)
        except BaseException:
            self.unhandledError(Failure())

    def _answer_error(self, failure: Failure, ask: bytes) -> None:
        try:
            self._emit(_error_box(failure, ask))
        except BaseException:
            self.unhandledError(Failure())

    def _emit(self, box: amp.AmpBox) -> None:
        try:
            box._sendTo(self.boxSender)
        except (amp.ProtocolSwitched, amp.ConnectionLost):
            pass

    # --- sending ---------------------------------------------------------------------------

    def sendBox(self, box: amp.AmpBox) -> None:
        """Write one box (the checks of BinaryBoxProtocol.sendBox, a faster serialiser)."""
        if self._locked:
            raise amp.ProtocolSwitched("This connection has switched: no AMP traffic allowed.")
        if self.transport is None:
            raise amp.ConnectionLost()
        self.transport.write(serialize(box))

    def callRemote(self, commandType: type[amp.Command], *a: Any, **kw: Any) -> Deferred | None:
        """Call a command on the other side: fires with its parsed answer or its declared error."""
        if a:
            return super().callRemote(commandType, *a, **kw)
        compiled = schemas(commandType)
        try:
            unknown = kw.keys() - compiled.arguments.names
            if unknown:
                raise amp.InvalidSignature(f"{sorted(unknown)[0]} is not a valid argument")
            forgotten = [name for name in compiled.arguments.required if name not in kw]
            if forgotten:  # Twisted's Command() says the same
                raise amp.InvalidSignature(f"forgot {', '.join(forgotten)} for {commandType.commandName}")
            box = compiled.arguments.build(kw, self, _Box())
        except BaseException:
            return fail()
        d = self._sendBoxCommand(commandType.commandName, box, commandType.requiresAnswer)
        if d is None:
            return None
        return d.addCallbacks(compiled.response.parse, compiled.remote_error, callbackArgs=(self,))


def _responder(proto: Any, compiled: CommandSchemas, method: Callable[..., Any]) -> Callable[[amp.AmpBox], Any]:
    """Parse, call, answer: an AmpBox at once for a plain result, else a Deferred of one.

    Argument errors raise (as Twisted's responders do); the responder's own errors
    become the command's declared errors, or what ``proto.responderFailed`` makes of them.
    """
    response = compiled.response
    response_type = compiled.command.responseType
    if response_type is amp.AmpBox:
        response_type = _Box

    command = compiled.command
    declared = tuple(command.allErrors)

    def failed(failure: Failure) -> Failure:
        # As Twisted's responders do: a declared error travels under its code; anything
        # else is the protocol's to judge.
        kind = failure.check(*declared)
        if kind is None:
            return proto.responderFailed(failure, command.commandName)
        return Failure(amp.RemoteAmpError(
            command.allErrors[kind], str(failure.value), kind in command.fatalErrors, local=failure,
        ))

    def answer(result: dict[str, Any]) -> Any:
        try:
            return response.build(result, proto, response_type())
        except BaseException:
            return failed(Failure(amp.BadLocalReturn(
                f"{method!r} returned {result!r} and {command!r} could not serialize it", Failure(),
            )))

    def respond(box: amp.AmpBox) -> Any:
        arguments = compiled.arguments.parse(box, proto)
        try:
            result = method(**arguments)
        except BaseException:
            return fail(failed(Failure()))
        if isinstance(result, Deferred):
            return result.addCallbacks(answer, failed)
        built = answer(result)
        return fail(built) if isinstance(built, Failure) else built

    return respond
