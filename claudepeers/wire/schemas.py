"""AMP's argument lists compiled once per command, the box serialiser, and fast responders.

:mod:`.fastamp` runs every box through these: a :class:`Schema` converts a command's
arguments or response without Twisted's per-call name normalising and box copies, and
:func:`responder` wraps a responder method once per connection and command. Everything
here is built on AMP's public classes (``amp.Argument``, ``amp.Command``'s declarations,
``amp.RemoteAmpError``), so it means what Twisted's own conversions mean
(``tests/test_fastamp.py`` holds the two to each other).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.protocols import amp
from twisted.python.failure import Failure


class Box(amp.AmpBox):
    """An AmpBox made without ``AmpBox.__init__``'s scan for text keys: every box made
    here gets bytes keys by construction, and that scan was a tenth of the broker's time."""

    __slots__: list[str] = []

    def __init__(self) -> None:  # noqa: D107 - an empty dict needs no initialisation
        pass


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


def responder(proto: Any, compiled: CommandSchemas, method: Callable[..., Any]) -> Callable[[amp.AmpBox], Any]:
    """Parse, call, answer: an AmpBox at once for a plain result, else a Deferred of one.

    Argument errors raise (as Twisted's responders do); the responder's own errors
    become the command's declared errors, or what ``proto.responderFailed`` makes of them.
    """
    response = compiled.response
    response_type = compiled.command.responseType
    if response_type is amp.AmpBox:
        response_type = Box

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
